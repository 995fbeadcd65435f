"""IRC's mode-string grammar (``+mi``, ``+ov-k alice bob key``), for the hub, the IRC front
end, the client library and the CLI alike: a room's mode changes travel as
``events.ModeChange`` entries, and these turn them into words and back."""
from __future__ import annotations

from . import events as ev


def takes_parameter(mode: str, adding: bool) -> bool:
    """Whether a change of ``mode`` carries a parameter (IRC's CHANMODES=b,k,l,imnst)."""
    return len(mode) == 1 and (mode in "bkov" or (mode == "l" and adding))


def parse_mode_string(words) -> tuple[ev.ModeChange, ...]:
    """The changes an IRC-style mode string asks for: ``["+mi"]``, ``["+o", "alice"]``,
    ``["+ov-k", "alice", "bob", "key"]``. A mode lacking its parameter gets "" (which the hub
    refuses, or, for ``b``, an IRC client takes as a list request); unknown letters are kept
    for the hub to refuse by name."""
    words = list(words)
    if not words:
        return ()
    text, parameters = words[0], words[1:]
    changes, adding = [], True
    for char in text:
        if char in "+-":
            adding = char == "+"
            continue
        argument = ""
        if takes_parameter(char, adding) and parameters:
            argument = parameters.pop(0)
        changes.append(ev.ModeChange(adding, char, argument))
    return tuple(changes)


def format_changes(changes) -> list[str]:
    """``changes`` as IRC writes them: the mode string, then the parameters in order."""
    text, sign, arguments = "", "", []
    for change in changes:
        wanted = "+" if change.adding else "-"
        if wanted != sign:
            text += wanted
            sign = wanted
        text += change.mode
        if change.argument and takes_parameter(change.mode, change.adding):
            arguments.append(change.argument)
    return [text, *arguments] if text else []
