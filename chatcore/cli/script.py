"""The scriptable front end: lines from stdin, one line per event on stdout.

Plain lines go to the current target (``--to``/``--room`` or the last ``/chat``/``/join``),
``/`` lines are commands. Every record is printed as it happens and flushed, as text or, with
``--json``, as one JSON object. When stdin closes (or on ``/quit``) the client waits until
its messages are acknowledged, then exits with a status that says whether all went through.
"""
from __future__ import annotations

import asyncio
import sys
import threading

from . import exitcodes
from .config import ClientConfig
from .formatting import format_json, format_text
from .session import Session


def _read_lines(stream, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue) -> None:
    """In a daemon thread: a blocked read must not keep the process alive."""
    def put(item) -> None:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, item)
        except RuntimeError:        # the loop is closed: the client has finished
            pass
    try:
        for line in stream:
            put(line)
    except (OSError, ValueError):
        pass
    put(None)


async def run(config: ClientConfig, stdin=None, stdout=None, stderr=None) -> int:
    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    started = False

    def emit(rec: dict) -> None:
        if not started and rec["type"] == "error":
            print(f"chatcore-client: {rec['message']}", file=stderr, flush=True)
            return
        print(format_json(rec) if config.json else format_text(rec), file=stdout, flush=True)

    session = Session(config, emit, page_all=True)
    status = await session.start()
    if status is not None:
        return status
    started = True
    loop = asyncio.get_running_loop()
    lines: asyncio.Queue = asyncio.Queue()
    threading.Thread(target=_read_lines, args=(stdin, loop, lines), daemon=True,
                     name="stdin").start()
    try:
        while not session.quit_requested:
            line = await lines.get()
            if line is None:
                break
            # One line at a time: its replies come out before the next line's, so the output
            # follows the input. Messages typed while offline do not hold up the next line.
            await session.wait_idle(config.drain_timeout_seconds, replies_only=True)
            session.handle_line(line)
        drained = await session.wait_idle(config.drain_timeout_seconds)
        connected = session.connected
    finally:
        await session.close(getattr(session, "quit_reason", ""))
    if not drained and not connected:
        return exitcodes.UNAVAILABLE
    if session.undelivered or session.failed_requests or not drained:
        return exitcodes.NOT_DELIVERED
    return exitcodes.OK
