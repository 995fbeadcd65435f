"""Tab completion: commands, user names and room names (a prompt_toolkit ``Completer``).

The first word of a line that starts with ``/`` completes to a command; a word starting with
``#`` to a room; any other word to a user name or a room. A name completed as the first word
of a plain line gets ": " after it, the way people address each other in a room.
"""
from __future__ import annotations

from typing import Callable, Iterable

from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document

from .commands import BY_NAME, COMMANDS


class ChatCompleter(Completer):
    def __init__(self, users: Callable[[], Iterable[str]], rooms: Callable[[], Iterable[str]]):
        self.users = users          # known user names, most relevant first
        self.rooms = rooms          # room names without '#'

    def get_completions(self, document: Document, complete_event: CompleteEvent):
        before = document.text_before_cursor
        if "\n" in before:
            before = before.rsplit("\n", 1)[1]
        word = before.rsplit(" ", 1)[-1]
        first_word = " " not in before
        if first_word and word.startswith("/"):
            typed = word[1:].lower()
            names = [c.name for c in COMMANDS] + sorted(set(BY_NAME) - {c.name
                                                                      for c in COMMANDS})
            for name in names:
                if name.startswith(typed):
                    command = BY_NAME[name]
                    yield Completion(f"/{name} ", -len(word), display=f"/{name}",
                                     display_meta=command.help)
            return
        typed = word.casefold().lstrip("@")
        if word.startswith("#"):
            candidates = [f"#{room}" for room in self.rooms()]
        else:
            candidates = list(self.users()) + [f"#{room}" for room in self.rooms()]
        seen = set()
        for candidate in candidates:
            key = candidate.casefold()
            if key in seen or not (key.startswith(typed) or key.lstrip("#").startswith(typed)):
                continue
            seen.add(key)
            addressed = first_word and not before.startswith("/") and not candidate.startswith(
                "#")
            yield Completion(candidate + (": " if addressed else ""), -len(word),
                             display=candidate)
