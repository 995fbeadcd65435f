"""Which function answers which IRC command, and the helpers every command module shares.

Each command module (``registration``, ``channels``, ``messages``, ``users``, ``queries``,
and ``moderation`` when it exists) registers its handlers here with ``register``; a later
registration of a command replaces an earlier one, so ``moderation`` may take over MODE.
``channel_modes`` is what channel modes say about a channel (the mode string, a member's
prefixes); ``moderation`` replaces it with its own object of the same shape.
"""
from __future__ import annotations

import importlib
import itertools
import importlib.util

from . import numerics as rpl
from .message import Message

# The room of an IRC channel: '#' and a chatcore room name.
CHANNEL_PREFIX = "#"

BEFORE_REGISTRATION: dict = {}      # command -> handler(conn, params), allowed before 001
HANDLERS: dict = {}                 # every command of a registered client


def register(command: str, handler, before_registration: bool = False) -> None:
    HANDLERS[command] = handler
    if before_registration:
        BEFORE_REGISTRATION[command] = handler


def dispatch(conn, message: Message) -> None:
    command = message.command
    if not conn.registered:
        handler = BEFORE_REGISTRATION.get(command)
        if handler is None:
            if command in HANDLERS:
                conn.reply(rpl.ERR_NOTREGISTERED, "You have not registered")
            else:
                conn.reply(rpl.ERR_UNKNOWNCOMMAND, command, "Unknown command")
            return
        handler(conn, message.params)
        return
    handler = HANDLERS.get(command)
    if handler is None:
        conn.reply(rpl.ERR_UNKNOWNCOMMAND, command, "Unknown command")
        return
    handler(conn, message.params)


def need(conn, command: str, params: list, count: int) -> bool:
    """False (after a 461) when fewer than ``count`` parameters, or the last one empty."""
    if len(params) < count or (count and not params[count - 1] and command != "USER"):
        conn.reply(rpl.ERR_NEEDMOREPARAMS, command, "Not enough parameters")
        return False
    return True


def in_turn(items, step, then=None) -> None:
    """``step(item, resume)`` for each item in order, the next once the one before called
    ``resume()``: at once, or later, when it waited for the cluster (``conn.ask_hub``);
    then ``then()``. A loop, not recursion, while the steps finish at once, so a JOIN of
    a hundred channels on one server costs no stack."""
    items = iter(items)
    stepping = [False, False]           # inside step(); resume() was called inside it

    def resume() -> None:
        if stepping[0]:
            stepping[1] = True
        else:
            run()

    def run() -> None:
        for item in items:
            stepping[:] = True, False
            step(item, resume)
            resumed, stepping[:] = stepping[1], (False, False)
            if not resumed:
                return              # waiting: resume() goes on from here
        if then is not None:
            then()

    run()


def pages(conn, ask, each, then, each_page=None) -> None:
    """A hub list page by page: ``ask(after, done)`` (``users_page``, ``rooms_page``),
    ``each(entry)`` for every entry, then ``then()``. A cluster answers each page later
    (the client's next lines wait); a server alone at once, in a loop. ``each_page``
    instead of ``each``: ``each_page(entries, go_on)`` for every page, which calls
    ``go_on()`` once done with it (at once, or after asking the hub more)."""
    session = conn.session
    after = [""]

    def step(_, resume) -> None:
        def got(page) -> None:
            if conn.session is not session:
                return                  # gone meanwhile
            if page is None or not hasattr(page, "entries"):     # a refusal: stop there
                then()
                return

            def go_on() -> None:
                after[0] = page.next_after
                if after[0]:
                    resume()
                else:
                    then()

            if each_page is not None:
                each_page(page.entries, go_on)
                return
            for entry in page.entries:
                each(entry)
            go_on()

        conn.ask_hub(lambda done: ask(after[0], done), got)

    in_turn(itertools.repeat(None), step)       # until a page says it is the last


def room_of(target: str) -> str | None:
    """The room name of a channel target, or None for a nick."""
    return target[1:] if target.startswith(CHANNEL_PREFIX) else None


class ChannelModes:
    """Channel modes as this front end knows them without moderation: every channel is +n
    (only members speak, as native rooms work) and nobody has a prefix."""

    def mode_string(self, conn, room_name: str) -> tuple[str, ...]:
        """The 324 parameters after the channel: the modes and their arguments."""
        return ("+n",)

    def prefixes(self, conn, room_name: str, member: str) -> str:
        """The member's prefixes, highest first ("@+"), for NAMES and WHO."""
        return ""


channel_modes = ChannelModes()


def load_commands() -> None:
    for name in ("registration", "channels", "messages", "users", "whowas", "queries",
                 "moderation"):
        module = f"{__package__}.{name}"
        if name == "moderation" and importlib.util.find_spec(module) is None:
            continue            # room moderation (MODE changes, KICK, INVITE) not built in
        importlib.import_module(module)
