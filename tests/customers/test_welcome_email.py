"""The welcome email, built with less work per message, is byte for byte what Django's own path builds."""
from __future__ import annotations

from email.policy import compat32

import pytest
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
