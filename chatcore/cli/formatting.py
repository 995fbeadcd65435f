"""What the client shows: output records and their text and JSON lines. Pure.

The session describes everything that happens as a record, a dict with a ``type`` and a
``ts`` (ms since the epoch: the server's for messages, the local clock otherwise). The
scriptable ``--json`` mode prints records as they are; ``format_text`` makes the line a person
reads: time, then who and where, then what.

Everything that came from the network is made safe before it is shown (``safe_text``): no
control character reaches the terminal raw, and a message's further lines are indented
continuation lines (``CONTINUATION``) that can never pass for another message.
"""
from __future__ import annotations

import json
import re
import time

from .. import events as ev
from ..errors import ErrorCode

REASONS = {ev.Reason.CLOSED: "closed", ev.Reason.QUIT: "quit",
           ev.Reason.DISCONNECTED: "disconnected", ev.Reason.TIMED_OUT: "timed out",
           ev.Reason.TOO_SLOW: "too slow", ev.Reason.SERVER_SHUTDOWN: "server shutdown",
           ev.Reason.FLOODED: "flooding", ev.Reason.OVER_LIMIT: "over a server limit",
           ev.Reason.KICKED: "kicked", ev.Reason.SERVER_LOST: "server lost"}

ERROR_TEXT = {
    ErrorCode.NAME_TAKEN: "name taken",
    ErrorCode.NAME_INVALID: "invalid name",
    ErrorCode.NO_SUCH_USER: "no such user",
    ErrorCode.NOT_IN_ROOM: "not in that room",
    ErrorCode.ROOM_INVALID: "invalid room name",
    ErrorCode.CANNOT_CHAT_SELF: "cannot chat with yourself",
    ErrorCode.NO_CONVERSATION: "no such conversation",
    ErrorCode.TEXT_INVALID: "text refused",
    ErrorCode.TOO_MANY_ROOMS: "too many rooms",
    ErrorCode.SERVER_FULL: "server full",
    ErrorCode.SERVER_SHUTDOWN: "server shutting down",
}


# "HH:MM:SS " is 9 columns: a message's further lines start under its text with a bar, so a
# pasted "10:46:30 bob -> #lobby: I resign" inside a message never starts a line of its own.
CONTINUATION = " " * 9 + "| "
# Echoes of your own text in notices ("not delivered", "queued") are cut to this many
# characters: the notice is about the message, the whole text is still where you typed it.
PREVIEW_CHARS = 60

# C0 but LF and TAB, DEL, C1; bidirectional marks, overrides and isolates (they reorder what
# follows on screen); line and paragraph separators (shown as line feeds); lone surrogates.
_UNSAFE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e"
                     r"\u2066-\u2069\u2028\u2029\ud800-\udfff]")


def _escape(match: re.Match) -> str:
    char = match.group()
    code = ord(char)
    if char in "\u2028\u2029":
        return "\n"
    if code < 0x20:
        return "^" + chr(code + 0x40)           # BEL is ^G, ESC is ^[, CR is ^M
    if code == 0x7f:
        return "^?"
    return f"<U+{code:04X}>"


def safe_text(text: str, newlines: bool = True) -> str:
    """``text`` with every control character visible (``^G``, ``<U+202E>``); a tab is a space.

    ``newlines``: keep line feeds (the caller indents the lines after the first), else show
    them as ``^J`` too.
    """
    text = _UNSAFE.sub(_escape, text.replace("\t", " "))
    if not newlines:
        text = text.replace("\n", "^J")
    return text


def preview(text: str) -> str:
    """The start of ``text`` for a notice: one line, at most PREVIEW_CHARS characters."""
    first = safe_text(text, newlines=False)
    if len(first) <= PREVIEW_CHARS:
        return first
    return f"{first[:PREVIEW_CHARS]}... ({len(text.encode('utf-8', 'surrogatepass'))} bytes)"


def indent_lines(text: str) -> str:
    """A multi-line message text: lines after the first become continuation lines."""
    return text.replace("\n", "\n" + CONTINUATION)


def record(type_: str, ts: int | None = None, **fields) -> dict:
    """A record of ``type_``; ``ts`` defaults to now."""
    return {"type": type_, "ts": int(time.time() * 1000) if ts is None else ts, **fields}


def reason_name(reason: int) -> str:
    try:
        return REASONS[ev.Reason(reason)]
    except (ValueError, KeyError):          # a reason newer than this table
        return f"reason {reason}"


def error_name(code: int) -> str:
    try:
        code = ErrorCode(code)
    except ValueError:
        return f"error {code}"
    return ERROR_TEXT.get(code, code.name.lower().replace("_", " "))


def code_name(code: int) -> str:
    """An error code's name for records (``NO_SUCH_USER``), or its number if unknown."""
    try:
        return ErrorCode(code).name
    except ValueError:
        return str(code)


def rtt_ms(rtt_us: int) -> float | None:
    return None if rtt_us == ev.UNKNOWN_RTT else round(rtt_us / 1000, 3)


def format_json(rec: dict) -> str:
    return json.dumps(rec, ensure_ascii=False, separators=(",", ":"))


def clock(ts_ms: int) -> str:
    return time.strftime("%H:%M:%S", time.localtime(ts_ms / 1000))


def where_label(rec: dict) -> str:
    return f"#{rec['room']}" if rec.get("room") else rec.get("to", "?")


def _ms(value: float | None) -> str:
    if value is None:
        return "rtt ?"
    return f"rtt {value:.1f} ms" if value >= 1 else f"rtt {value:.2f} ms"


def _idle(seconds: int) -> str:
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


# One line per record kind whose text is just its fields; ``where`` is the target (#room or
# user). The kinds with more logic follow in _body.
_TEMPLATES = {
    "message": "{from} -> {where}: {text}",
    "sent": "{from} -> {where}: {text}",
    "action": "* {from} -> {where}: {text}",
    "away": "-- you are away: {message}",
    "back": "-- you are back",
    "away_reply": "-- {name} is away: {message}",
    "not_delivered": "!! not delivered to {where}: {text} ({reason})",
    "queued": "-- offline: will send to {where} after reconnecting: {text}",
    "resending": "-- resending to {where}: {text}",
    "joined": "-- {name} joined #{room}",
    "chat_opened": "-- {peer} opened a conversation with you",
    "chat": "-- talking to {where} now",
    "disconnected": "!! lost the server: {reason}",
    "pong": "-- pong from {server}: {rtt}",
    "error": "!! {message}",
    "hint": "!! {text}",
    "info": "-- {text}",
    "log_end": "-- end of {where}",
    # Room moderation (cli/moderation.py).
    "mode": "-- {by} sets mode {modes} on #{room}",
    "kicked": "-- {name} was kicked from #{room} by {by}: {reason}",
    "invited": "-- {by} invites you to #{room} (/join #{room} to accept)",
    "inviting": "-- you invited {name} to #{room}",
    "room_modes": "-- modes of #{room}: {summary}",
    "too_long": "!! not sent to {where}: the message is {size_bytes} bytes, the limit is "
                "{limit_bytes} (/split on sends long messages in parts)",
}


# A room's names on joining are one line; past this many the rest is a count (/who lists all).
MAX_NAMES_SHOWN = 100


def _date(ts_ms: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts_ms / 1000))


def _since(ts_ms: int) -> str:
    seconds = max(0, int(time.time() - ts_ms / 1000))
    return f"{_date(ts_ms)} ({_idle(seconds)} ago)"


def _counted(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


_PREVIEWED = frozenset({"not_delivered", "queued", "resending"})


def safe_record(rec: dict) -> dict:
    """``rec`` with every text field safe to print."""
    shown = {}
    for key, value in rec.items():
        if isinstance(value, str):
            if key == "text" and rec["type"] in _PREVIEWED:
                value = preview(value)
            elif key == "text":
                value = indent_lines(safe_text(value))
            else:
                value = safe_text(value, newlines=False)
        shown[key] = value
    return shown


def _body(rec: dict, multiline: bool) -> str:
    rec = safe_record(rec)
    kind = rec["type"]
    template = _TEMPLATES.get(kind)
    if template is not None:
        return template.format_map({**rec, "where": where_label(rec), "rtt": _ms(rec.get("rtt_ms"))})
    said = f": {rec['message']}" if rec.get("message") else ""
    if kind == "chat_closed":
        if rec.get("by_you"):
            return f"-- you closed the conversation with {rec['peer']}"
        if rec["reason"] == "closed":
            return f"-- {rec['peer']} closed the conversation"
        return f"-- conversation with {rec['peer']} ended ({rec['peer']} {rec['reason']}{said})"
    if kind == "left":
        return f"-- {rec['name']} left #{rec['room']} ({rec['reason']}{said})"
    if kind == "away_changed":
        return (f"* {rec['name']} is away: {rec['message']}" if rec.get("message")
                else f"* {rec['name']} is back")
    if kind == "nick":
        if rec.get("you"):
            return f"-- you are now known as {rec['new']}"
        return f"-- {rec['old']} is now known as {rec['new']}"
    if kind == "topic":
        if not rec["topic"]:
            return f"-- {rec['name']} cleared the topic of #{rec['room']}"
        return f"-- {rec['name']} set the topic of #{rec['room']}: {rec['topic']}"
    if kind == "topic_is":
        if not rec["topic"]:
            return f"-- #{rec['room']} has no topic"
        by = f" (set by {rec['by']}, {_date(rec['at_ms'])})" if rec.get("by") else ""
        return f"-- topic of #{rec['room']}: {rec['topic']}{by}"
    if kind == "names":
        shown = rec["members"][:MAX_NAMES_SHOWN]
        names = " ".join(m["name"] + (" (away)" if m.get("away") else "") for m in shown)
        more = rec["total"] - len(shown)
        rest = f" and {more} more (/who #{rec['room']} lists them)" if more > 0 else ""
        return safe_text(f"-- {_counted(rec['total'], 'user')} in #{rec['room']}: "
                         f"{names}{rest}", newlines=False)
    if kind == "whois":
        items = [f"server: {rec['server']}",
                 f"connected since {_since(rec['connected_at_ms'])}",
                 f"idle {_idle(rec['idle_seconds'])}, {_ms(rec['rtt_ms'])}"]
        if rec.get("away"):
            items.append(f"away: {rec['away']}")
        items.append("rooms in common: " + (" ".join(f"#{r}" for r in rec["rooms"])
                                            or "none"))
        return _listing(f"-- {rec['name']}", items, multiline)
    if kind == "switched":
        unread = rec.get("unread", 0)
        more = f" ({unread} unread: /log shows them)" if unread else ""
        return f"-- now talking in {where_label(rec)}{more}"
    if kind == "log":
        if not rec["count"]:
            return f"-- nothing yet in {where_label(rec)}"
        return f"-- the last {_counted(rec['count'], 'line')} of {where_label(rec)}:"
    if kind == "resumed":
        held = [f"#{room}" for room in rec["rooms"]] + list(rec["chats"])
        return ("-- resumed: your name" + (", " + ", ".join(held) if held else "")
                + " kept while you were away")
    if kind == "connected":
        return f"-- connected to {rec['server'] or rec['host']} as {rec['name']}"
    if kind == "reconnecting":
        return (f"-- reconnecting in {rec['delay_seconds']:.1f}s "
                f"(attempt {rec['attempt']}){': ' + rec['why'] if rec.get('why') else ''}")
    if kind == "users":
        where = f"#{rec['room']}" if rec.get("room") else "the server"
        users = [f"{u['name']} ({_ms(u['rtt_ms'])}, idle {_idle(u['idle_seconds'])}"
                 f"{', away: ' + u['away'] if u.get('away') else ''})" for u in rec["users"]]
        head = f"-- {_counted(rec['total'], 'user')} in {where}{_from(rec)}"
        return _listing(head, users + _more(rec), multiline)
    if kind == "rooms":
        rooms = [f"#{r['name']} ({r['members']})" for r in rec["rooms"]]
        about = "" if rec.get("exact", True) else "at most "
        matching = f" matching {rec['pattern']}" if rec.get("pattern") else ""
        head = f"-- {about}{_counted(rec['total'], 'room')}{matching}{_from(rec)}"
        return _listing(head, rooms + _more(rec), multiline)
    if kind == "servers":
        servers = []
        for s in rec["servers"]:
            rtt = _ms(s["rtt_ms"]) if s["rtt_ms"] is not None else "unreachable"
            users = f"{s['users']} users, " if s.get("users") is not None else ""
            node = (f", node rtt {_ms(s['node_rtt_ms'])[4:]}"
                    if s.get("node_rtt_ms") is not None else "")
            mark = ", connected" if s.get("current") else ""
            servers.append(f"{s['name']} {s['host']}:{s['port']} "
                           f"({users}{rtt}{node}{mark})")
        return _listing(f"-- {_counted(rec['total'], 'server')}", servers, multiline)
    if kind == "measured":
        rtts = ", ".join(f"{_address(s)} {_ms(s['rtt_ms'])[4:]}" if s["rtt_ms"] is not None
                         else f"{_address(s)} unreachable" for s in rec["servers"])
        return f"-- rtt to {rtts}: using {rec['using']}"
    if kind == "moved":
        here = f"{rec['server']} ({_address(rec)})"
        kept = [f"#{room}" for room in rec.get("rooms", ())] + list(rec.get("chats", ()))
        keeping = f", with {', '.join(kept)}" if kept else ""
        if rec.get("why") == "closer":
            was = (f" ({_ms(rec['rtt_ms'])} against {_ms(rec['old_rtt_ms'])[4:]})"
                   if rec.get("rtt_ms") is not None and rec.get("old_rtt_ms") is not None
                   else "")
            return f"-- moved from {rec['old_server']} to the closer {here}{was}{keeping}"
        after = f" after {rec['seconds']:.1f}s" if rec.get("seconds") is not None else ""
        return f"-- {rec['old_server']} was lost: now on {here}{after}{keeping}"
    if kind == "help":
        return _listing("-- commands", rec["lines"], multiline)
    return f"-- {kind}: " + ", ".join(f"{k}={v}" for k, v in rec.items()
                                     if k not in ("type", "ts"))


def _address(rec: dict) -> str:
    host = rec["host"]
    return f"[{host}]:{rec['port']}" if ":" in host else f"{host}:{rec['port']}"


def _from(rec: dict) -> str:
    """Which part of a paged list this is, when it is not all of it: " (201-400)"."""
    start = rec.get("start", 1)
    if start == 1 and not rec.get("more"):
        return ""
    count = len(rec.get("rooms") or rec.get("users") or ())
    return f" ({start}-{start + count - 1})"


def _more(rec: dict) -> list[str]:
    return ["... more: /more"] if rec.get("more") and not rec.get("continues") else []


def _listing(head: str, items: list[str], multiline: bool) -> str:
    items = [safe_text(item, newlines=False) for item in items]
    if not items:
        return head
    if multiline:
        return head + ":\n" + "\n".join("   " + item for item in items)
    return head + ": " + ", ".join(items)


def format_text(rec: dict, multiline: bool = False) -> str:
    """``rec`` as text: one line, or a head line and indented items when ``multiline``."""
    return f"{clock(rec['ts'])} {_body(rec, multiline)}"
