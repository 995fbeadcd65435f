"""What the client shows: output records and their text and JSON lines. Pure.

The session describes everything that happens as a record, a dict with a ``type`` and a
``ts`` (ms since the epoch: the server's for messages, the local clock otherwise). The
scriptable ``--json`` mode prints records as they are; ``format_text`` makes the line a person
reads: time, then who and where, then what.
"""
from __future__ import annotations

import json
import time

from .. import events as ev
from ..errors import ErrorCode

REASONS = {ev.Reason.CLOSED: "closed", ev.Reason.QUIT: "quit",
           ev.Reason.DISCONNECTED: "disconnected", ev.Reason.TIMED_OUT: "timed out",
           ev.Reason.TOO_SLOW: "too slow", ev.Reason.SERVER_SHUTDOWN: "server shutdown"}

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


def record(type_: str, ts: int | None = None, **fields) -> dict:
    """A record of ``type_``; ``ts`` defaults to now."""
    return {"type": type_, "ts": int(time.time() * 1000) if ts is None else ts, **fields}


def reason_name(reason: int) -> str:
    try:
        return REASONS[ev.Reason(reason)]
    except ValueError:
        return f"reason {reason}"


def error_name(code: int) -> str:
    try:
        code = ErrorCode(code)
    except ValueError:
        return f"error {code}"
    return ERROR_TEXT.get(code, code.name.lower().replace("_", " "))


def rtt_ms(rtt_us: int) -> float | None:
    return None if rtt_us == ev.UNKNOWN_RTT else round(rtt_us / 1000, 3)


def format_json(rec: dict) -> str:
    return json.dumps(rec, ensure_ascii=False, separators=(",", ":"))


def _clock(ts_ms: int) -> str:
    return time.strftime("%H:%M:%S", time.localtime(ts_ms / 1000))


def _where(rec: dict) -> str:
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
    "not_delivered": "!! not delivered to {where}: {text} ({reason})",
    "queued": "-- offline: will send to {where} after reconnecting: {text}",
    "resending": "-- resending to {where}: {text}",
    "joined": "-- {name} joined #{room}",
    "left": "-- {name} left #{room} ({reason})",
    "chat_opened": "-- {peer} opened a conversation with you",
    "chat": "-- talking to {where} now",
    "disconnected": "!! lost the server: {reason}",
    "pong": "-- pong from {server}: {rtt}",
    "error": "!! {message}",
    "hint": "!! {text}",
    "info": "-- {text}",
}


def _counted(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _body(rec: dict, multiline: bool) -> str:
    kind = rec["type"]
    template = _TEMPLATES.get(kind)
    if template is not None:
        return template.format_map({**rec, "where": _where(rec), "rtt": _ms(rec.get("rtt_ms"))})
    if kind == "chat_closed":
        if rec.get("by_you"):
            return f"-- you closed the conversation with {rec['peer']}"
        if rec["reason"] == "closed":
            return f"-- {rec['peer']} closed the conversation"
        return f"-- conversation with {rec['peer']} ended ({rec['peer']} {rec['reason']})"
    if kind == "connected":
        return f"-- connected to {rec['server'] or rec['host']} as {rec['name']}"
    if kind == "reconnecting":
        return (f"-- reconnecting in {rec['delay_seconds']:.1f}s "
                f"(attempt {rec['attempt']}){': ' + rec['why'] if rec.get('why') else ''}")
    if kind == "users":
        where = f"#{rec['room']}" if rec.get("room") else "the server"
        users = [f"{u['name']} ({_ms(u['rtt_ms'])}, idle {_idle(u['idle_seconds'])})"
                 for u in rec["users"]]
        head = f"-- {_counted(rec['total'], 'user')} in {where}"
        return _listing(head, users, multiline)
    if kind == "rooms":
        rooms = [f"#{r['name']} ({r['members']})" for r in rec["rooms"]]
        head = f"-- {_counted(rec['total'], 'room')}"
        return _listing(head, rooms, multiline)
    if kind == "servers":
        servers = []
        for s in rec["servers"]:
            rtt = _ms(s["rtt_ms"]) if s["rtt_ms"] is not None else "unreachable"
            mark = ", connected" if s.get("current") else ""
            servers.append(f"{s['name']} {s['host']}:{s['port']} "
                           f"({s['users']} users, {rtt}{mark})")
        return _listing(f"-- {_counted(rec['total'], 'server')}", servers, multiline)
    if kind == "help":
        return _listing("-- commands", rec["lines"], multiline)
    return f"-- {kind}: " + ", ".join(f"{k}={v}" for k, v in rec.items()
                                     if k not in ("type", "ts"))


def _listing(head: str, items: list[str], multiline: bool) -> str:
    if not items:
        return head
    if multiline:
        return head + ":\n" + "\n".join("   " + item for item in items)
    return head + ": " + ", ".join(items)


def format_text(rec: dict, multiline: bool = False) -> str:
    """``rec`` as text: one line, or a head line and indented items when ``multiline``."""
    return f"{_clock(rec['ts'])} {_body(rec, multiline)}"
