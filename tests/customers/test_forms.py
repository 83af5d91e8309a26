"""The signup form: what it accepts as typed, what it refuses, and the stored form of an address."""
from __future__ import annotations

import pytest
from django import forms
from django.http import QueryDict

from customers.forms import SignupForm, readable_data, text_problem
from customers.signup import email_normalize


def form(name: str = "Ada Lovelace", email: str = "ada@example.com", **extra: str) -> SignupForm:
    return SignupForm(data={"name": name, "email": email, **extra})


@pytest.mark.parametrize(
    "name",
    ["Zoë Ångström", "李小龍", "Владимир", "محمد", "ज़ोया", "Ngọc Ánh", "O'Brien-Smith", "Siân 👩‍🔬", "x" * 200,
     "נגה\u200cאור"],  # a zero-width non-joiner, which some scripts need
)
def test_unicode_names_are_accepted_as_typed(name: str) -> None:
    f = form(name=name)
    assert f.is_valid(), f.errors
    assert f.cleaned_data["name"] == name


def test_name_is_trimmed() -> None:
    f = form(name="  Ada \u3000")
    assert f.is_valid() and f.cleaned_data["name"] == "Ada"


@pytest.mark.parametrize(
    "name, fragment",
    [
        ("", "Please enter your name."),
        ("   \t  ", "Your name can't contain control characters or line breaks."),
        ("   \u3000  ", "Please enter your name."),
        ("\u200b\u200b", "Please enter your name."),  # only invisible characters
        ("x" * 201, "at most 200 characters"),
        ("x" * 10_240, "at most 200 characters"),
        ("Ada\x00", "control characters"),
        ("Ada\nLovelace", "control characters"),
        ("Ada\x1b[31m", "control characters"),
        ("Ada\u2028Lovelace", "control characters"),
        ("Ada\u202egnp.exe", "control characters"),  # a right-to-left override
        ("Ad\ufffda", "could not be read"),
        ("Ad\ud800a", "could not be read"),  # a lone surrogate
        ("Ad\udfffa", "could not be read"),
        ("Ada\ufdd0", "not allowed"),
        ("Ada\uffff", "not allowed"),
    ],
)
def test_bad_names_are_refused_with_a_clear_error(name: str, fragment: str) -> None:
    f = form(name=name)
    assert not f.is_valid()
    assert fragment in " ".join(map(str, f.errors["name"]))


@pytest.mark.parametrize(
    "email",
    ["", "   ", "plainaddress", "@example.com", "ada@", "ada@@example.com", "ada@exa mple.com", "ada@example..com",
     "a" * 245 + "@example.com", "ada@example.com\x00", "ada\n@example.com", "ada@exam\ufffdple.com",
     "ad\ud800a@example.com", "<script>@example.com", "ada@" + "a" * 10_240 + ".com",
     # letters Python's case-insensitive regex takes for ASCII, and other scripts in the local part
     "\u0131da@example.com", "\u0130da@example.com", "\u0430da@example.com", "zoë@example.com"],
)
def test_bad_emails_are_refused(email: str) -> None:
    f = form(email=email)
    assert not f.is_valid()
    assert "email" in f.errors


@pytest.mark.parametrize(
    "typed, stored",
    [
        ("Ada@Example.COM", "Ada@example.com"),
        ("  ada@example.com  ", "ada@example.com"),
        ("\uff41\uff44\uff41@\uff45\uff58\uff41\uff4d\uff50\uff4c\uff45.com", "ada@example.com"),  # full-width
        ("\u017fam@example.com", "sam@example.com"),  # long s folds to s under NFKC
        ("ada@B\u00fccher.DE", "ada@xn--bcher-kva.de"),
        ("ada@xn--bcher-kva.de", "ada@xn--bcher-kva.de"),
    ],
)
def test_emails_are_stored_normalised(typed: str, stored: str) -> None:
    f = form(email=typed)
    assert f.is_valid(), f.errors
    assert f.cleaned_data["email"] == stored
    assert email_normalize(typed) == stored


def test_email_normalize_leaves_unencodable_domains_for_the_validator() -> None:
    assert email_normalize("ada@exa..mple.com") == "ada@exa..mple.com"
    assert email_normalize("no-at-sign") == "no-at-sign"


def test_honeypot_is_not_an_error_but_is_noticed() -> None:
    f = form(website="http://spam.example")
    assert f.is_valid()
    assert f.is_bot()
    clean = form()
    assert clean.is_valid() and not clean.is_bot()


def test_text_problem_accepts_every_script_and_refuses_controls() -> None:
    assert text_problem("Ünïcödé 名前 имя") == ""
    assert text_problem("a\tb")
    assert text_problem("\x7f")


def test_readable_data_replaces_surrogates_in_querydicts_and_dicts() -> None:
    query = QueryDict(mutable=True)
    query.setlist("name", ["a\ud800", "b"])
    readable = readable_data(query)
    assert isinstance(readable, QueryDict) and readable.getlist("name") == ["a\ufffd", "b"]
    assert readable_data({"name": "\udc80"}) == {"name": "\ufffd"}
    assert readable_data(None) is None


def test_inputs_are_named_name_and_email_with_limits() -> None:
    f = SignupForm()
    assert [field.html_name for field in f.visible_fields_for_people] == ["name", "email"]
    name, email = f.fields["name"], f.fields["email"]
    assert isinstance(name, forms.CharField) and name.max_length == 200
    assert isinstance(email, forms.EmailField) and email.max_length == 254


@pytest.mark.parametrize("name", ["Ada\r", "\nAda", "Ada\t"])
def test_control_characters_are_refused_even_where_stripping_would_hide_them(name: str) -> None:
    form = SignupForm({"name": name, "email": "ada@example.com"})
    assert not form.is_valid() and "name" in form.errors
    form = SignupForm({"name": "Ada", "email": "ada@example.com\r"})
    assert not form.is_valid() and "email" in form.errors
