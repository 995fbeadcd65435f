"""The interactive front end: prompt_toolkit's line editor with output printed above it.

``patch_stdout`` makes every ``print`` appear above the input line and redraws what the user
was typing, so an incoming message never garbles a half-typed line. The prompt shows where
plain lines go (``[bob]``, ``[#lobby]``) and ``(offline)`` while reconnecting; the status line
below it lists the open conversations by number, with unread counts and mentions.

Keys: Alt-1..9 switch to a conversation, Ctrl-N/Ctrl-P to the next/previous one, Tab
completes, Alt-Enter starts a new line in the message, Ctrl-C clears the line (a second one on
an empty line quits), Ctrl-D on an empty line quits.
"""
from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import sys

from prompt_toolkit import PromptSession
from prompt_toolkit.application import get_app_or_none
from prompt_toolkit.history import InMemoryHistory
from prompt_toolkit.key_binding import KeyBindings
from prompt_toolkit.output import ColorDepth
from prompt_toolkit.patch_stdout import patch_stdout

from . import exitcodes
from .completion import ChatCompleter
from .config import ClientConfig
from .display import Display, colour_wanted, to_ansi, wrap
from .formatting import record
from .session import Session


class Front:
    """The pieces of the screen that read the session: prompt, status line, key bindings."""

    def __init__(self, session: Session, colour: bool):
        self.session = session
        self.colour = colour
        self.drawn_target = None            # what the prompt showed last: where Enter sends
        self.quit_armed = False             # Ctrl-C on an empty line once: again quits

    def prompt(self) -> str:
        self.drawn_target = self.session.target
        return self.session.prompt_for(self.drawn_target)

    def toolbar(self, buffer_text: str):
        session = self.session
        away = " (away)" if session.away_message else ""
        offline = "" if session.connected else " (offline)"
        fragments = [("", f" {session.name}{away}{offline} |")]
        conversations = session.conversations
        for number, conversation in enumerate(conversations.items, 1):
            label = f"{number}:{conversation.target.label}"
            if conversation.target.same(conversations.active):
                fragments.append(("bold", f" [{label}]"))
            elif conversation.unread:
                mark = "!" if conversation.mentioned else ""
                fragments.append(("bold underline" if mark else "bold",
                                  f" {label}({conversation.unread}{mark})"))
            else:
                fragments.append(("", f" {label}"))
        if not conversations.items:
            fragments.append(("", " no conversations: /join ROOM or /chat USER"))
        if "\n" in buffer_text:
            lines = buffer_text.count("\n") + 1
            fragments.append(("bold", f" | {lines} lines: Enter sends them as one message"))
        if self.quit_armed:
            fragments.append(("bold", " | Ctrl-C again to quit"))
        return fragments

    def key_bindings(self) -> KeyBindings:
        bindings = KeyBindings()
        session = self.session

        def switcher(number: int):
            def switch(event) -> None:
                items = session.conversations.items
                if number <= len(items):
                    session.switch_to(items[number - 1])
            return switch

        for number in range(1, 10):
            bindings.add("escape", str(number))(switcher(number))
        bindings.add("c-n")(lambda event: session.step(1))
        bindings.add("c-p")(lambda event: session.step(-1))

        @bindings.add("escape", "enter")
        def newline(event) -> None:
            event.current_buffer.insert_text("\n")

        @bindings.add("c-c")
        def interrupt(event) -> None:
            buffer = event.current_buffer
            if buffer.text:
                buffer.reset()
                self.quit_armed = False
            else:
                self.interrupted_on_empty_line()
            event.app.invalidate()

        return bindings

    def interrupted_on_empty_line(self) -> None:
        """Ctrl-C with nothing typed: the first says how to leave, the second leaves."""
        if self.quit_armed:
            self.session.quit_requested = True
            app = get_app_or_none()
            if app is not None and app.is_running:
                app.exit(exception=KeyboardInterrupt())
        else:
            self.quit_armed = True
            self.session.emit(record("info", text="Ctrl-C again (or Ctrl-D, /quit) to leave"))


def _continuation(width: int, line_number: int, wrap_count: int) -> str:
    return " " * max(width - 2, 0) + "| "


async def run(config: ClientConfig) -> int:
    colour = colour_wanted(os.environ, sys.stdout.isatty())
    escapes = os.environ.get("TERM", "dumb") not in ("", "dumb")
    holder: dict = {}
    prompt: PromptSession = PromptSession(
        history=InMemoryHistory(),
        color_depth=None if colour else ColorDepth.DEPTH_1_BIT)

    async def ask_name() -> str:
        return (await prompt.prompt_async("Username: ")).strip()

    display = Display(lambda: holder["session"].name if "session" in holder else "", colour)

    def emit(rec: dict) -> None:
        # The terminal's own size, not $COLUMNS (stale after a resize, or set by a parent).
        width = prompt.app.output.get_size().columns
        # One write per record: patch_stdout flushes at line ends, and a record split across
        # two flushes would have the prompt redrawn in the middle of it.
        sys.stdout.write(to_ansi(wrap(display.fragments(rec), width), escapes) + "\n")
        sys.stdout.flush()

    with patch_stdout(raw=True):
        try:
            if config.name is None:
                print("Connecting to {}:{}. Pick a name (empty: the server picks one)."
                      .format(config.host, config.port))
                config = dataclasses.replace(config, name=await ask_name())
            session = holder["session"] = Session(config, emit, ask_name=ask_name,
                                                  on_change=prompt.app.invalidate)
            status = await session.start()
        except (EOFError, KeyboardInterrupt):
            return exitcodes.OK
        if status is not None:
            return status
        front = Front(session, colour)
        buffer = prompt.default_buffer

        def typed(_buffer) -> None:
            if front.quit_armed and buffer.text:
                front.quit_armed = False
        buffer.on_text_changed += typed
        completer = ChatCompleter(session.completion_users, session.completion_rooms)
        bindings = front.key_bindings()
        print("type /help for the commands, /quit to leave; Alt-1..9 or Ctrl-N/P switch "
              "conversations")
        # Between two prompts the terminal is not in raw mode and Ctrl-C is a signal: it
        # must not quit at once there either.
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGINT, front.interrupted_on_empty_line)
        try:
            while not session.quit_requested:
                try:
                    line = await prompt.prompt_async(
                        front.prompt, completer=completer, complete_while_typing=False,
                        key_bindings=bindings, handle_sigint=False,     # ours stays in place
                        bottom_toolbar=lambda: front.toolbar(buffer.text),
                        prompt_continuation=_continuation)
                except (EOFError, KeyboardInterrupt):
                    break
                front.quit_armed = False
                session.handle_line(line, front.drawn_target)
        finally:
            loop.remove_signal_handler(signal.SIGINT)
            await session.close(session.quit_reason)
    return exitcodes.OK
