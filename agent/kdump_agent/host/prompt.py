"""Asking the admin before doing something that cannot be undone."""

from __future__ import annotations

from collections.abc import Callable

CONFIRM_WORD = "yes"


def confirm(question: str, ask: Callable[[str], str] = input) -> bool:
    """True only when the admin types `yes`: a stray Enter or `y` does not crash a machine.

    No terminal (end of input) is a no.
    """
    try:
        return ask(f"{question} Type {CONFIRM_WORD} to go on: ").strip() == CONFIRM_WORD
    except EOFError:
        return False
