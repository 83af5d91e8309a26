"""End to end: a signup through the site's view is onboarded by the real daemon process."""
from __future__ import annotations

import email
import time

import pytest
from django.urls import reverse

from customers.models import Customer, Onboarding
from tests.conftest import wait_for

pytestmark = pytest.mark.process


def mail_messages(project) -> list[email.message.Message]:
    """Every message the file-based email backend wrote for the daemon."""
    directory = project.tmp / "mail"
    if not directory.exists():
        return []
    messages = []
    separator = "-" * 79
    for path in sorted(directory.iterdir()):
        for chunk in path.read_text().split(separator):
            if chunk.strip():
                messages.append(email.message_from_string(chunk.strip()))
    return messages


def test_signup_is_onboarded_within_the_interval_exactly_once(project, client, settings) -> None:
    settings.DAEMONS_RUN_DIR = project.run_dir
    project.start("onboarding")

    began = time.monotonic()
    response = client.post(reverse("customers:signup"), {"name": "Ada Lovelace", "email": "Ada@Example.com"})
    assert response.status_code == 302
    customer = Customer.objects.get()
    assert customer.email == "Ada@example.com"

    wait_for(lambda: Customer.objects.filter(pk=customer.pk, onboarded_at__isnull=False).exists(),
             timeout=5, message="onboarding within the 5 s interval")
    assert time.monotonic() - began < 5

    [message] = wait_for(lambda: mail_messages(project), message="the welcome email file")
    assert message["To"] == "Ada@example.com"
    assert message["Message-ID"] == Onboarding.objects.get().message_id
    assert message.is_multipart()
    parts = message.get_payload()
    assert isinstance(parts, list) and len(parts) == 2
    assert {part.get_content_type() for part in parts if isinstance(part, email.message.Message)} == {"text/plain",
                                                                                                        "text/html"}

    # Another signup with the same address in another case makes no row and no second email.
    again = client.post(reverse("customers:signup"), {"name": "Ada", "email": "ada@EXAMPLE.com"})
    assert again.status_code == 302 and again.url == response.url
    assert Customer.objects.count() == 1
    status = project.manage("daemonstatus", "onboarding")
    assert status.returncode == 0 and "0 waiting, 0 failed" in status.stdout
    assert Onboarding.objects.count() == 1 and len(mail_messages(project)) == 1
