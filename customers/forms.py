"""The public signup form: what a name and an email address may be, and the honeypot."""
from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from typing import Any

from django import forms
from django.core.exceptions import ValidationError
from django.utils.datastructures import MultiValueDict

from .signup import email_normalize

NAME_MAX_LENGTH = 200
EMAIL_MAX_LENGTH = 254

# What the decoder puts where the bytes were not UTF-8; a name containing it is a
# mangled name, not what the person typed.
REPLACEMENT_CHARACTER = "\ufffd"
SURROGATES = re.compile("[\ud800-\udfff]")
# Bidirectional overrides and isolates can make a name display as something else in the
# admin or an email; zero-width joiners, which some scripts need, are not among them.
BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
# Categories that carry no visible character of their own.
INVISIBLE_CATEGORIES = frozenset({"Zs", "Zl", "Zp", "Cc", "Cf", "Cs", "Mn", "Me", "Mc"})


def text_problem(value: str) -> str:
    """Why `value` can't be stored as typed, or "" if it can.

    Refused: undecodable input (U+FFFD, lone surrogates), control characters (NUL, tab,
    newline, ...), line and paragraph separators, bidirectional overrides and Unicode
    noncharacters. Everything else, in any script, is accepted.
    """
    for char in value:
        category = unicodedata.category(char)
        if char == REPLACEMENT_CHARACTER or category == "Cs":
            return "contains a character that could not be read; please type it again"
        if category in ("Cc", "Zl", "Zp") or char in BIDI_CONTROLS:
            return "can't contain control characters or line breaks"
        code = ord(char)
        if 0xFDD0 <= code <= 0xFDEF or (code & 0xFFFE) == 0xFFFE:
            return "contains a character that is not allowed"
    return ""


def readable_data(data: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """`data` with lone surrogates turned into U+FFFD.

    A surrogate can't be encoded into the response, so echoing one back in the form
    would be a server error; U+FFFD is refused like the surrogate was.
    """
    if data is None:
        return None

    def clean(value: Any) -> Any:
        return SURROGATES.sub(REPLACEMENT_CHARACTER, value) if isinstance(value, str) else value

    if isinstance(data, MultiValueDict):  # QueryDict is one too: they keep every value per key
        copy = data.copy()
        for key, values in data.lists():
            copy.setlist(key, [clean(value) for value in values])
        return copy
    return {key: clean(value) for key, value in data.items()}


class NameField(forms.CharField):
    """A person's name as typed, in any script, without invisible or unreadable characters."""

    def to_python(self, value: Any) -> str:
        # Checked before stripping: a control character is refused wherever it stands.
        problem = text_problem(value) if isinstance(value, str) else ""
        if problem:
            raise ValidationError(f"Your name {problem}.", code="unreadable")
        value = super().to_python(value)
        if value:
            if all(unicodedata.category(char) in INVISIBLE_CATEGORIES for char in value):
                raise ValidationError("Please enter your name.", code="invisible")
        return value


class SignupEmailField(forms.EmailField):
    """An address in its stored form (see `email_normalize`), with an ASCII local part.

    The local part is restricted to ASCII so that case-insensitive uniqueness, which the
    database decides with `Lower(email)`, can't be dodged by letters only some databases
    fold (SQLite folds ASCII only), nor by look-alikes from other scripts.
    """

    def to_python(self, value: Any) -> str:
        # Checked before stripping: a control character is refused wherever it stands.
        if isinstance(value, str) and text_problem(value):
            raise ValidationError(self.error_messages["invalid"], code="invalid")
        value = super().to_python(value)
        if value:
            value = email_normalize(value)
        return value

    def clean(self, value: Any) -> str:
        value = super().clean(value)
        if value and not value.rpartition("@")[0].isascii():
            raise ValidationError(self.error_messages["invalid"], code="invalid")
        return value


class SignupForm(forms.Form):
    name = NameField(
        label="Your name",
        max_length=NAME_MAX_LENGTH,
        error_messages={
            "required": "Please enter your name.",
            "max_length": f"Please use at most {NAME_MAX_LENGTH} characters.",
        },
        widget=forms.TextInput(attrs={"autocomplete": "name"}),
    )
    email = SignupEmailField(
        label="Email address",
        max_length=EMAIL_MAX_LENGTH,
        error_messages={
            "required": "Please enter your email address.",
            "invalid": "Please enter a valid email address, like name@example.com.",
            "max_length": f"Please use at most {EMAIL_MAX_LENGTH} characters.",
        },
        widget=forms.EmailInput(attrs={"autocomplete": "email"}),
    )
    # The honeypot: hidden from people (and from keyboard and screen-reader users), so
    # only a bot fills it in.
    website = forms.CharField(required=False, label="Leave this field empty")

    HONEYPOT = "website"

    def __init__(self, data: Mapping[str, Any] | None = None, *args: Any, **kwargs: Any) -> None:
        super().__init__(readable_data(data), *args, **kwargs)

    @property
    def visible_fields_for_people(self) -> list[forms.BoundField]:
        return [self[name] for name in self.fields if name != self.HONEYPOT]

    def is_bot(self) -> bool:
        """True if the honeypot was filled in; call after `is_valid()`."""
        return bool(self.data.get(self.HONEYPOT, ""))
