"""The open conversations: rooms and direct chats, which one is active, what is unread. Pure.

Conversations are numbered in the order they were opened (1, 2, ...), as irssi numbers its
windows; the active one is where plain lines go. A line for any other conversation makes it
"unread" until it is switched to; a line that mentions your name also marks it mentioned.
Each conversation keeps its recent lines so that ``/log`` can show them alone.
"""
from __future__ import annotations

import collections
import re
from dataclasses import dataclass, field

# /log shows a conversation's lines alone; a few screens of them is what a person reviews,
# and the bound keeps a long-running client's memory flat.
MAX_LOG_LINES = 200


@dataclass(frozen=True, slots=True)
class Target:
    """Where plain lines go: a user (a direct chat) or a room."""
    kind: str                 # "user" or "room"
    name: str

    @property
    def label(self) -> str:
        return f"#{self.name}" if self.kind == "room" else self.name

    def fields(self) -> dict:
        return {"room": self.name} if self.kind == "room" else {"to": self.name}

    def same(self, other: Target | None) -> bool:
        return (other is not None and other.kind == self.kind
                and other.name.casefold() == self.name.casefold())


@dataclass(slots=True)
class Conversation:
    target: Target
    live: bool = True         # open on the server: a room joined, a chat not ended
    unread: int = 0
    mentioned: bool = False
    log: collections.deque = field(
        default_factory=lambda: collections.deque(maxlen=MAX_LOG_LINES))


def mentions(text: str, name: str) -> bool:
    """Whether ``text`` names ``name`` as a word (any case): "bob:", "@bob", "hi Bob!"."""
    if not name:
        return False
    return re.search(r"(?<![\w.-])" + re.escape(name) + r"(?![\w-])", text,
                     re.IGNORECASE) is not None


class Conversations:
    def __init__(self) -> None:
        self.items: list[Conversation] = []
        self.active: Target | None = None

    # -- what is open -------------------------------------------------------------------------

    def get(self, target: Target) -> Conversation | None:
        return next((c for c in self.items if c.target.same(target)), None)

    def open(self, target: Target) -> Conversation:
        """The conversation with ``target``, added at the end if it was not open."""
        conversation = self.get(target)
        if conversation is None:
            conversation = Conversation(target)
            self.items.append(conversation)
        return conversation

    def close(self, target: Target) -> None:
        self.items = [c for c in self.items if not c.target.same(target)]
        if target.same(self.active):
            self.active = None

    def rename(self, old: str, new: str) -> None:
        """A user changed their name: their direct chat follows them."""
        old_target = Target("user", old)
        for conversation in self.items:
            if conversation.target.same(old_target):
                conversation.target = Target("user", new)
        if old_target.same(self.active):
            self.active = Target("user", new)

    @property
    def rooms(self) -> list[str]:
        return [c.target.name for c in self.items if c.target.kind == "room" and c.live]

    @property
    def chats(self) -> list[str]:
        return [c.target.name for c in self.items if c.target.kind == "user" and c.live]

    def number(self, target: Target) -> int:
        """1-based position of ``target``; 0 when it is not open."""
        return next((i for i, c in enumerate(self.items, 1) if c.target.same(target)), 0)

    def find(self, what: str) -> Conversation | None:
        """By number ("2"), room ("#dev" or "dev") or user name, any case."""
        if what.isdigit():
            index = int(what) - 1
            return self.items[index] if 0 <= index < len(self.items) else None
        if what.startswith("#"):
            return self.get(Target("room", what[1:]))
        return self.get(Target("user", what)) or self.get(Target("room", what))

    # -- switching ----------------------------------------------------------------------------

    def switch(self, target: Target) -> Conversation:
        """Make ``target`` active (opening it if needed); its lines count as read."""
        conversation = self.open(target)
        self.active = conversation.target
        conversation.unread = 0
        conversation.mentioned = False
        return conversation

    def step(self, offset: int) -> Conversation | None:
        """The conversation ``offset`` places after the active one, wrapping around."""
        if not self.items:
            return None
        current = self.number(self.active) if self.active else 0
        index = (current - 1 + offset) % len(self.items) if current else (
            0 if offset > 0 else len(self.items) - 1)
        return self.items[index]

    # -- lines --------------------------------------------------------------------------------

    def note(self, target: Target, rec: dict, *, unread: bool = True,
             mention: bool = False) -> None:
        """``rec`` happened in ``target``'s conversation; a direct chat is opened if it was
        not, a room we are not in (any more) keeps nothing."""
        conversation = self.get(target)
        if conversation is None:
            if target.kind == "room":
                return
            conversation = self.open(target)
        conversation.log.append(rec)
        if unread and not target.same(self.active):
            conversation.unread += 1
            conversation.mentioned |= mention

    def activity(self) -> list[tuple[int, Conversation]]:
        """The conversations with unread lines, by number."""
        return [(i, c) for i, c in enumerate(self.items, 1) if c.unread]
