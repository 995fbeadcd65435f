"""Room moderation in the client: /mode, /kick, /invite, /op, /deop, /voice, /devoice, and
what the server tells about them (mode changes, kicks, invitations, a room's modes).

``ModerationActions`` is mixed into ``Session`` like ``CommandActions``; its commands are in
the table of ``commands`` (``MODERATION_COMMANDS``) and act on the current room unless told
another. Mode strings are IRC's (``+mi``, ``+o bob``, ``+kl key 10``), see docs/protocol.md,
"Room moderation".
"""
from __future__ import annotations

from .. import events as ev
from ..modes import format_changes, parse_mode_string
from .commands import CommandError, check_room
from .conversations import Target
from .formatting import record


def _room_modes_text(event: ev.RoomModes) -> str:
    flags = "+" + event.modes
    arguments = [event.key] if event.key else []
    if event.limit:
        arguments.append(str(event.limit))
    operators, voiced = _holders(event, "o"), _holders(event, "v")
    parts = [" ".join([flags, *arguments]),
             "operators: " + (" ".join(operators) or "none"),
             "voiced: " + (" ".join(voiced) or "none")]
    if event.bans:
        parts.append("bans: " + " ".join(ban.mask for ban in event.bans))
    return "; ".join(parts)


def _holders(event: ev.RoomModes, mode: str) -> list[str]:
    return sorted((m.name for m in event.members if mode in m.modes), key=str.casefold)


class ModerationActions:
    """Mixed into Session."""

    def _current_room(self, command: str) -> str | None:
        target = self.target
        if target is None or target.kind != "room":
            self._hint(f"{command} is for rooms: /switch to one (or /join ROOM) first")
            return None
        return target.name

    # -- commands ----------------------------------------------------------------------------

    def _cmd_mode(self, text: str | None = None) -> None:
        words = (text or "").split()
        if words and words[0].startswith("#"):
            try:
                room = check_room(words.pop(0), "/mode [#ROOM] [MODES [ARGS]]")
            except CommandError as exc:
                self._hint(str(exc))
                return
        else:
            room = self._current_room("/mode")
            if room is None:
                return
        if self._offline_hint("/mode"):
            return
        if not words:
            self._request(ev.GetRoomModes(room), lambda reply: self._show_modes(reply),
                          label=f"/mode #{room}")
            return
        if words[0][0] not in "+-":
            self._hint("modes start with + or -: /mode +m, /mode +o bob, /mode -k KEY")
            return
        self._request(ev.SetRoomMode(room, parse_mode_string(words)), lambda reply: None,
                      label=f"/mode #{room}")

    def _cmd_kick(self, name: str, reason: str = "") -> None:
        room = self._current_room("/kick")
        if room is None or self._offline_hint("/kick"):
            return
        self._request(ev.Kick(room, name, reason), lambda reply: None,
                      label=f"/kick {name}")

    def _cmd_invite(self, name: str, room: str | None = None) -> None:
        room = room or self._current_room("/invite")
        if room is None or self._offline_hint("/invite"):
            return

        def done(reply: ev.Ok) -> None:
            self._show(record("inviting", name=name, room=room), Target("room", room))
        self._request(ev.Invite(room, name), done, label=f"/invite {name}")

    def _member_mode(self, command: str, change: ev.ModeChange) -> None:
        room = self._current_room(f"/{command}")
        if room is None or self._offline_hint(f"/{command}"):
            return
        self._request(ev.SetRoomMode(room, (change,)), lambda reply: None,
                      label=f"/{command} {change.argument}")

    def _cmd_op(self, name: str) -> None:
        self._member_mode("op", ev.ModeChange(True, "o", name))

    def _cmd_deop(self, name: str) -> None:
        self._member_mode("deop", ev.ModeChange(False, "o", name))

    def _cmd_voice(self, name: str) -> None:
        self._member_mode("voice", ev.ModeChange(True, "v", name))

    def _cmd_devoice(self, name: str) -> None:
        self._member_mode("devoice", ev.ModeChange(False, "v", name))

    def _show_modes(self, event: ev.RoomModes) -> None:
        self._show(record("room_modes", room=event.room, modes=event.modes, key=event.key,
                          limit=event.limit,
                          operators=_holders(event, "o"), voiced=_holders(event, "v"),
                          bans=[ban.mask for ban in event.bans],
                          summary=_room_modes_text(event)), Target("room", event.room))

    # -- notifications -----------------------------------------------------------------------

    def _on_RoomModes(self, event: ev.RoomModes) -> None:
        """Told on each join, just before RoomJoined: nothing to show (/mode shows it)."""

    def _on_RoomModeChanged(self, event: ev.RoomModeChanged) -> None:
        self._show(record("mode", room=event.room, by=event.name or "the server",
                          modes=" ".join(format_changes(event.changes))),
                   Target("room", event.room))

    def _on_Kicked(self, event: ev.Kicked) -> None:
        self._show(record("kicked", room=event.room, name=event.name, by=event.by,
                          reason=event.reason or "no reason given"),
                   Target("room", event.room))

    def _on_Invited(self, event: ev.Invited) -> None:
        self._seen_user(event.name)
        self._show(record("invited", room=event.room, by=event.name))
