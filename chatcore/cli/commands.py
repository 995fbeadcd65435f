"""The command table and the parser of one input line. Pure: no I/O, no session state.

Shapes follow irssi and WeeChat: ``/msg USER TEXT``, ``/query`` as an alias of ``/chat``,
``/part`` as an alias of ``/leave``, ``/window`` of ``/switch``. A line that does not start with ``/`` is text for the
current target; ``//text`` sends ``/text`` literally.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

# The server's rules (chatcore server, "Names" and "Rooms"); checked here too so that a typo
# gets a hint at once instead of a round trip.
MAX_NAME_CHARS = 32
MAX_ROOM_CHARS = 64
NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_.\-]{0,%d}\Z" % (MAX_NAME_CHARS - 1))
ROOM_RE = re.compile(r"[A-Za-z0-9_.\-]{1,%d}\Z" % MAX_ROOM_CHARS)


@dataclass(frozen=True, slots=True)
class Command:
    name: str
    aliases: tuple[str, ...]
    params: tuple[str, ...]   # USER, ROOM, TEXT (the rest of the line); [X] is optional
    help: str

    @property
    def usage(self) -> str:
        return " ".join((f"/{self.name}",) + self.params)


COMMANDS = (
    Command("chat", ("query", "q"), ("USER",), "talk to USER: plain lines go to them"),
    Command("msg", ("m",), ("USER", "TEXT"), "send one message to USER"),
    Command("reply", ("r",), ("[TEXT]",),
            "answer whoever sent you the last direct message (no TEXT: switch to them)"),
    Command("close", (), ("[USER]",), "end the conversation (the peer is told)"),
    Command("join", ("j",), ("ROOM",), "join ROOM and talk there"),
    Command("leave", ("part",), ("[ROOM]",), "leave ROOM (default: the current one)"),
    Command("switch", ("window", "win", "w"), ("WHERE",),
            "make conversation WHERE current: its number, #room or user (Alt-1..9, "
            "Ctrl-N/P)"),
    Command("log", ("lastlog",), ("[WHERE]",),
            "show the recent lines of one conversation alone (default: the current one)"),
    Command("split", (), ("[on|off]",),
            "send a message over the size limit in parts (on) or refuse it (off, default)"),
    Command("me", ("action",), ("TEXT",), "act in the current conversation: * alice waves"),
    Command("away", (), ("[TEXT]",),
            "be away, with TEXT answered to direct messages (no TEXT: back)"),
    Command("back", (), (), "no longer away"),
    Command("nick", ("name",), ("NAME",), "change your name (your rooms and chats are told)"),
    Command("topic", ("t",), ("[TEXT]",),
            "show the current room's topic, or set it to TEXT (-delete clears it)"),
    Command("whois", ("wi",), ("USER",),
            "who USER is: server, connected since, idle, RTT, away, rooms in common"),
    Command("rooms", ("list",), ("[PATTERN]",),
            "list the rooms on the server (PATTERN: a name start, or a glob like *ops*)"),
    Command("who", ("names", "users"), ("[ROOM]",), "list users (of ROOM) with their RTT"),
    Command("more", (), (), "the next page of the last /rooms or /who"),
    Command("servers", (), (), "list the servers with the RTT to each"),
    Command("ping", (), (), "measure the round-trip time to the server now"),
    # Room moderation (cli/moderation.py): the current room unless #ROOM is given.
    Command("mode", (), ("[TEXT]",),
            "show the current room's modes, or change them (operators): +m, +o bob, +k KEY"),
    Command("kick", (), ("USER", "[TEXT]"), "remove USER from the current room (operators)"),
    Command("invite", (), ("USER", "[ROOM]"), "invite USER to ROOM (default: the current one)"),
    Command("op", (), ("USER",), "make USER an operator of the current room"),
    Command("deop", (), ("USER",), "take operator from USER"),
    Command("voice", (), ("USER",), "let USER speak in the current room when it is +m"),
    Command("devoice", (), ("USER",), "take voice from USER"),
    Command("help", ("h", "?"), (), "show this list"),
    Command("quit", ("exit", "bye"), ("[TEXT]",), "leave the chat"),
)

BY_NAME = {alias: command for command in COMMANDS
           for alias in (command.name,) + command.aliases}


@dataclass(frozen=True, slots=True)
class Text:
    """A plain line: a message for the current target."""
    text: str


@dataclass(frozen=True, slots=True)
class Invocation:
    command: Command
    args: tuple[str, ...]     # one per parameter given; optional ones may be missing


class CommandError(ValueError):
    """The line cannot be run; ``str()`` is a one-line hint for the user."""


def parse_line(line: str) -> Text | Invocation | None:
    """What ``line`` asks for; None for an empty line; raises CommandError with a hint."""
    line = line.rstrip("\r\n")
    if not line.strip():
        return None
    if not line.startswith("/"):
        return Text(line)
    if line.startswith("//"):
        return Text(line[1:])
    word, _, rest = line[1:].partition(" ")
    command = BY_NAME.get(word.lower())
    if command is None:
        raise CommandError(f"unknown command /{word}; type /help for the list")
    args: list[str] = []
    for param in command.params:
        rest = rest.lstrip(" ")
        if param.strip("[]") == "TEXT":
            value, rest = rest.strip(), ""
        else:
            value, _, rest = rest.partition(" ")
        if not value:
            if param.startswith("["):
                break
            raise CommandError(f"missing {param}; usage: {command.usage}")
        args.append(_check(param.strip("[]"), value, command))
    if rest.strip():
        raise CommandError(f"too many arguments; usage: {command.usage}")
    return Invocation(command, tuple(args))


def _check(kind: str, value: str, command: Command) -> str:
    if kind in ("USER", "NAME"):
        value = value.lstrip("@")
        if not NAME_RE.match(value):
            raise CommandError(f"not a user name: {value!r} (a letter, then letters, digits "
                               f"or _.-, up to {MAX_NAME_CHARS}); usage: {command.usage}")
    elif kind == "ROOM":
        value = check_room(value, command.usage)
    elif kind == "on|off":
        value = value.lower()
        if value not in ("on", "off"):
            raise CommandError(f"say on or off; usage: {command.usage}")
    return value


def check_room(value: str, usage: str = "/join ROOM") -> str:
    """``value`` without a leading ``#``; raises CommandError if it cannot be a room."""
    room = value[1:] if value.startswith("#") else value
    if not ROOM_RE.match(room):
        raise CommandError(f"not a room name: {value!r} (letters, digits or _.-, up to "
                           f"{MAX_ROOM_CHARS}); usage: {usage}")
    return room


def help_lines() -> list[str]:
    width = max(len(c.usage) for c in COMMANDS)
    lines = []
    for c in COMMANDS:
        aliases = f"  (also {', '.join('/' + a for a in c.aliases)})" if c.aliases else ""
        lines.append(f"{c.usage:<{width}}  {c.help}{aliases}")
    lines.append(f"{'TEXT':<{width}}  a line without / goes to the current conversation "
                 f"or room (//text sends /text)")
    return lines
