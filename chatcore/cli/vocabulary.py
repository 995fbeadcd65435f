"""The chat vocabulary irssi users expect: /me, /away and /back, /nick, /topic, /whois, and
what the server tells about them (actions, away replies, name changes, topics, the room's
state on joining).

``VocabularyActions`` is mixed into ``Session`` like ``CommandActions``: its ``_cmd_NAME``
methods answer commands of the table in ``commands``, its ``_on_EVENT`` methods the
notifications of docs/protocol.md ("Chat vocabulary").
"""
from __future__ import annotations

from .. import events as ev
from .conversations import Target
from .formatting import code_name, error_name, record, rtt_ms

# "/topic -delete" clears the topic, as in irssi.
CLEAR_TOPIC = "-delete"


def _same(a: str, b: str) -> bool:
    return a.casefold() == b.casefold()


class VocabularyActions:
    """Mixed into Session."""

    # -- commands ----------------------------------------------------------------------------

    def _cmd_me(self, text: str) -> None:
        target = self.target
        if target is None:
            self._hint("nowhere to act: /chat USER or /join ROOM first")
            return
        if self._offline_hint("/me"):
            return
        event = (ev.SendRoomAction(target.name, text) if target.kind == "room"
                 else ev.SendDirectAction(target.name, text))

        def acked(ack: ev.Ack) -> None:
            if target.kind == "user":
                self._remember_chat(target.name)
            self._show(record("action", ts=ack.timestamp_ms, **{"from": self.name}, text=text,
                              msg_id=ack.msg_id, **target.fields()), target)

        def refused(error: ev.Error) -> None:
            self.undelivered += 1
            self.emit(record("not_delivered", text=text, code=code_name(error.code),
                             reason=error.message or error_name(error.code),
                             **target.fields()))

        self._request(event, acked, refused)

    def _cmd_away(self, message: str | None = None) -> None:
        if not message:
            self._cmd_back()
            return
        if self._offline_hint("/away"):
            return

        def done(reply: ev.Ok) -> None:
            self.away_message = message
            self.emit(record("away", message=message))
        self._request(ev.SetAway(message), done, label="/away")

    def _cmd_back(self) -> None:
        if self._offline_hint("/back"):
            return

        def done(reply: ev.Ok) -> None:
            self.away_message = ""
            self.emit(record("back"))
        self._request(ev.SetAway(""), done, label="/back")

    def _cmd_nick(self, name: str) -> None:
        if self._offline_hint("/nick"):
            return
        # What changes is told by NameChanged (to us too); the Ok only closes the request.
        self._request(ev.SetName(name), lambda reply: None, label=f"/nick {name}")

    def _cmd_topic(self, topic: str | None = None) -> None:
        target = self.target
        if target is None or target.kind != "room":
            self._hint("/topic is for rooms: /switch to one (or /join ROOM) first")
            return
        if topic is None:
            self._show_topic(target.name)
            return
        if self._offline_hint("/topic"):
            return
        self._request(ev.SetTopic(target.name, "" if topic == CLEAR_TOPIC else topic),
                      lambda reply: None, label=f"/topic #{target.name}")

    def _show_topic(self, room: str) -> None:
        topic, by, at_ms = self.topics.get(room.casefold(), ("", "", 0))
        self.emit(record("topic_is", room=room, topic=topic, by=by, at_ms=at_ms))

    def _cmd_whois(self, name: str) -> None:
        if self._offline_hint("/whois"):
            return

        def details(reply: ev.UserDetails) -> None:
            self._seen_user(reply.name)
            self.emit(record("whois", name=reply.name, server=reply.server,
                             connected_at_ms=reply.connected_at_ms,
                             idle_seconds=reply.idle_seconds, rtt_ms=rtt_ms(reply.rtt_us),
                             away=reply.away, rooms=[r.name for r in reply.rooms]))
        self._request(ev.Whois(name), details, label=f"/whois {name}")

    # -- notifications -----------------------------------------------------------------------

    def _on_DirectAction(self, event: ev.DirectAction) -> None:
        self._show_direct(event, "action")

    def _on_RoomAction(self, event: ev.RoomAction) -> None:
        self._show_room(event, "action")

    def _on_AwayReply(self, event: ev.AwayReply) -> None:
        self._show(record("away_reply", name=event.name, message=event.message),
                   Target("user", event.name))

    def _on_NameChanged(self, event: ev.NameChanged) -> None:
        you = _same(event.old, self.name)
        if you:
            self.name = event.new
        else:
            self.known_users.pop(event.old.casefold(), None)
            self._seen_user(event.new)
            self.conversations.rename(event.old, event.new)
            if self.last_direct and _same(self.last_direct, event.old):
                self.last_direct = event.new
        rec = record("nick", old=event.old, new=event.new, you=you)
        conversation = self.conversations.get(Target("user", event.new))
        self._show(rec, conversation.target if conversation else None)
        self._notify()

    def _on_AwayChanged(self, event: ev.AwayChanged) -> None:
        self._show(record("away_changed", name=event.name, message=event.message))

    def _on_TopicChanged(self, event: ev.TopicChanged) -> None:
        self.topics[event.room.casefold()] = (event.topic, event.name, event.timestamp_ms)
        self._show(record("topic", ts=event.timestamp_ms, room=event.room, name=event.name,
                          topic=event.topic), Target("room", event.room))

    def _on_RoomJoined(self, event: ev.RoomJoined) -> None:
        room = Target("room", event.room)
        self.topics[event.room.casefold()] = (event.topic, event.topic_by, event.topic_at_ms)
        for member in event.members:
            self._seen_user(member.name)
        if event.topic:                 # as irssi: no topic, no line
            self._show(record("topic_is", room=event.room, topic=event.topic,
                              by=event.topic_by, at_ms=event.topic_at_ms), room)
        names = sorted(event.members, key=lambda m: m.name.casefold())
        self._show(record("names", room=event.room, total=event.total,
                          members=[{"name": m.name, "away": m.away} for m in names]), room)
