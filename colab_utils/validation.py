"""Small input checks shared by every module (no heavy imports here)."""

from __future__ import annotations


def check_choice(name: str, value: str, choices) -> str:
    """Return ``value`` if it is one of ``choices``, else raise ``ValueError`` listing them."""
    if value not in choices:
        raise ValueError(
            f"unknown {name} {value!r}; expected one of: {', '.join(map(repr, choices))}"
        )
    return value
