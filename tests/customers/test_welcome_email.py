"""The welcome email, built with less work per message, is byte for byte what Django's own path builds."""
from __future__ import annotations

import re
from email.policy import compat32
from smtplib import quoteaddr

import pytest
from django.core.mail import EmailMultiAlternatives
from django.core.mail.message import sanitize_address
from django.utils import timezone

from customers import onboarding
from customers.models import Customer


@pytest.mark.parametrize("name", ["Ann Example", "Zoë Ünïcode " * 3, "a" * 120, "Tab\there",
                                  "Boundary ===============0=="])
def test_the_quick_headers_flatten_as_compat32_does(name) -> None:
    customer = Customer(pk=7, name=name, email="ann@example.com", created_at=timezone.now())
    message = onboarding.welcome_email(customer).message()
    assert message.policy is onboarding.QUICK_FOLD
    quick = message.as_bytes()
    message.policy = compat32
    assert quick == message.as_bytes()
    boundary = message.get_boundary()
    assert boundary and quick.count(f"--{boundary}".encode()) == 3  # two parts and the end, nowhere else


def test_a_header_that_needs_folding_or_encoding_takes_the_stdlib_path() -> None:
    for value in ["x" * 80, "Zoë", "a\x0bb"]:
        assert onboarding.QUICK_FOLD.fold("Subject", value) == compat32.fold("Subject", value)


def normalized(data: bytes, boundary: str) -> bytes:
    """`data` with its boundary and Date, the two parts that differ from one message to the next, made fixed."""
    return re.sub(rb"(?m)^Date: .*\r$", b"Date: D\r", data.replace(boundary.encode(), b"BOUNDARY"))


def django_sends(message: EmailMultiAlternatives) -> tuple[str, list[str], bytes]:
    """What Django's own SMTP backend sends for `message`: envelope sender, recipients and bytes, as `_send` does."""
    plain = EmailMultiAlternatives(subject=message.subject, body=message.body, from_email=message.from_email,
                                   to=message.to, headers=message.extra_headers, alternatives=message.alternatives)
    flat = plain.message()
    data = flat.as_bytes(linesep="\r\n")  # type: ignore[call-arg]  # Django's MIMEMixin takes it
    boundary = flat.get_boundary()  # chosen as the message is flattened
    assert boundary is not None
    data = normalized(data, boundary)
    # smtplib sends each envelope address quoted, so that is what must agree.
    return (quoteaddr(sanitize_address(plain.from_email, "utf-8")),
            [quoteaddr(sanitize_address(to, "utf-8")) for to in plain.to], data)


def sent_directly(message: onboarding.WelcomeEmail) -> tuple[str, list[str], bytes] | None:
    envelope = message.envelope()
    if envelope is None:
        return None
    match = re.search(rb'boundary="([^"]+)"', envelope.data)
    assert match
    quoted = [f"<{address}>" if onboarding.PLAIN_ADDRESS.fullmatch(address) else quoteaddr(address)
              for address in (envelope.sender, *envelope.recipients)]  # as FinalReplySMTP quotes them
    return quoted[0], quoted[1:], normalized(envelope.data, match[1].decode())


@pytest.mark.parametrize("email", ["ann@example.com", "o'brien+tag@mail.example.org", "A.B-c_d@EXAMPLE.com"])
@pytest.mark.parametrize("name", ["Ann Example", "Two  spaces ", "<b>Bold</b> & co", "x" * 51, "=?utf-8?q?hi?=",
                                  "<evil@example.com>", "(comment), a;b"])
def test_the_welcome_email_is_sent_directly_in_the_bytes_djangos_backend_sends(name, email) -> None:
    customer = Customer(pk=7, name=name, email=email, created_at=timezone.now())
    message = onboarding.welcome_email(customer)
    direct = sent_directly(message)
    assert direct is not None, "the common welcome email takes the direct path"
    assert direct == django_sends(message)


@pytest.mark.parametrize("name", ["Zoë Ünïcode", "x" * 52, "Tab\there"])
def test_a_welcome_email_that_needs_encoding_or_folding_is_left_to_django(name) -> None:
    customer = Customer(pk=7, name=name, email="ann@example.com", created_at=timezone.now())
    assert onboarding.welcome_email(customer).envelope() is None


@pytest.mark.parametrize("email", ["ann@bücher.example", "\"quoted local\"@example.com", "a..b@example.com"])
def test_a_recipient_django_would_rewrite_is_left_to_django(email) -> None:
    customer = Customer(pk=7, name="Ann", email=email, created_at=timezone.now())
    assert onboarding.welcome_email(customer).envelope() is None


@pytest.mark.parametrize("body", ["Grüße\r\naus Köln\r", "line\n" + "y" * 998 + "\n", "", "no end of line"])
def test_parts_are_written_as_django_writes_them_or_left_to_it(body) -> None:
    message = onboarding.WelcomeEmail(subject="Hello", body=body, to=["ann@example.com"],
                                      headers={"Message-ID": "<m-1@example.com>"})
    message.attach_alternative(f"<p>{body}</p>", "text/html")
    direct = sent_directly(message)
    long_line = any(len(line.encode()) > 998 for line in f"<p>{body}</p>".splitlines())
    assert (direct is None) == (long_line or not body)  # Django leaves an empty body out
    if direct is not None:
        assert direct == django_sends(message)


@pytest.mark.parametrize("address", ["ann@example.com", "o'brien+tag@mail.example.org", "a.b@c-d.e", "x@localhost"])
def test_a_plain_address_is_quoted_as_smtplib_quotes_it(address) -> None:
    assert onboarding.PLAIN_ADDRESS.fullmatch(address)
    assert quoteaddr(address) == f"<{address}>"
