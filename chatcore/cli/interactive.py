"""The interactive front end: prompt_toolkit's line editor with output printed above it.

``patch_stdout`` makes every ``print`` appear above the input line and redraws what the user
was typing, so an incoming message never garbles a half-typed line. The prompt shows where
plain lines go (``[bob]``, ``[#lobby]``) and ``(offline)`` while reconnecting.
"""
from __future__ import annotations

import dataclasses

from prompt_toolkit import PromptSession
from prompt_toolkit.history import InMemoryHistory
from prompt_toolkit.patch_stdout import patch_stdout

from . import exitcodes
from .config import ClientConfig
from .formatting import format_text
from .session import Session


async def run(config: ClientConfig) -> int:
    prompt: PromptSession = PromptSession(history=InMemoryHistory())

    async def ask_name() -> str:
        return (await prompt.prompt_async("Username: ")).strip()

    def emit(rec: dict) -> None:
        print(format_text(rec, multiline=True), flush=True)

    with patch_stdout():
        try:
            if config.name is None:
                print("Connecting to {}:{}. Pick a name (empty: the server picks one)."
                      .format(config.host, config.port))
                config = dataclasses.replace(config, name=await ask_name())
            session = Session(config, emit, ask_name=ask_name,
                              on_change=prompt.app.invalidate)
            status = await session.start()
        except (EOFError, KeyboardInterrupt):
            return exitcodes.OK
        if status is not None:
            return status
        emit_help = "type /help for the commands, /quit to leave"
        print(emit_help)
        try:
            while not session.quit_requested:
                try:
                    line = await prompt.prompt_async(lambda: session.prompt_text)
                except (EOFError, KeyboardInterrupt):
                    break
                session.handle_line(line)
        finally:
            await session.close(getattr(session, "quit_reason", ""))
    return exitcodes.OK
