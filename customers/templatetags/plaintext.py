"""Template filters for plain-text output (email subjects and text bodies)."""
from __future__ import annotations

from django import template

register = template.Library()

_ANGLE_BRACKETS = str.maketrans({"<": "&lt;", ">": "&gt;"})


@register.filter(is_safe=False)
def no_markup(value: object) -> str:
    """`value` as plain text that no client can take for markup.

    Only `<` and `>` are escaped: a plain-text body is not HTML, so "O'Brien" and
    "Smith & Sons" must read as typed, but a client that wraps text in HTML (or a person
    pasting it into a page) must never meet a live tag.
    """
    return str(value).translate(_ANGLE_BRACKETS)
