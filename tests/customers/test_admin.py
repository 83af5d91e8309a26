"""The Customer admin: columns, state and date filters, search, the retry action, escaping."""
from __future__ import annotations

import html
import re
from datetime import timedelta

import pytest
from django.core import mail
from django.test import Client
from django.utils import timezone

from customers import onboarding
from customers.daemons import OnboardingDaemon
from customers.models import Customer, Onboarding, OnboardingState
from customers.onboarding import Owner
from customers.signup import customer_create
from tests.conftest import matched

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/customers/customer/"


@pytest.fixture
def customers() -> dict[str, Customer]:
    now = timezone.now()
    made = {
        "waiting": Customer.objects.create(name="Wendy Waiting", email="wendy@example.com"),
        "retrying": Customer.objects.create(name="Rita Retrying", email="rita@example.com", attempts=2,
                                            last_error="SMTPServerDisconnected: try later"),
        "onboarded": Customer.objects.create(name="Otto Onboarded", email="otto@example.com", onboarded_at=now),
        "failed": Customer.objects.create(name="Fay Failed", email="fay@example.com", attempts=5, failed_at=now,
                                          last_error="SMTPRecipientsRefused: 550 no such user"),
        "attention": Customer.objects.create(name="Una Unconfirmed", email="una@example.com", attempts=3,
                                             unknown_outcomes=3, attention_at=now,
                                             last_error="SendOutcomeUnknown: timed out",
                                             attention_reason="3 send(s) with an unknown outcome"),
    }
    # One old signup, for the date filter.
    Customer.objects.filter(pk=made["onboarded"].pk).update(created_at=now - timedelta(days=40))
    return made


def names_listed(html: str) -> set[str]:
    return set(re.findall(r'<th class="field-name"><a href="[^"]+">([^<]+)</a>', html))


def test_changelist_shows_every_column(admin_client: Client, customers) -> None:
    html = admin_client.get(CHANGELIST).content.decode()
    for header in ["Name", "Email", "Signed up", "Onboarding", "Attempts", "Last error"]:
        assert f">{header}<" in html, header
    assert names_listed(html) == {"Wendy Waiting", "Rita Retrying", "Otto Onboarded", "Fay Failed", "Una Unconfirmed"}
    for state in ["waiting", "retrying", "onboarded", "failed", "needs attention"]:
        assert f'<td class="field-onboarding_state">{state}</td>' in html
    assert "SMTPRecipientsRefused: 550 no such user" in html
    # A customer needing attention shows why, not only its last error.
    assert "3 send(s) with an unknown outcome" in html
    assert '<td class="field-attempts">5</td>' in html
    assert 'href="/admin/dashboard/"' in html


@pytest.mark.parametrize("state", list(OnboardingState))
def test_state_filter_lists_only_that_state(admin_client: Client, customers, state: OnboardingState) -> None:
    html = admin_client.get(CHANGELIST, {"state": state.value}).content.decode()
    assert names_listed(html) == {customers[state.value].name}


def test_date_filter_and_search(admin_client: Client, customers) -> None:
    # Follow the date filter's own "Past 7 days" link, as the operator would.
    page = admin_client.get(CHANGELIST).content.decode()
    link = html.unescape(matched(r'<a href="(\?created_at__gte=[^"]+)">Past 7 days</a>', page, group=1))
    recent = admin_client.get(CHANGELIST + link).content.decode()
    assert "Otto Onboarded" not in names_listed(recent) and len(names_listed(recent)) == 4
    assert names_listed(admin_client.get(CHANGELIST, {"q": "rita"}).content.decode()) == {"Rita Retrying"}
    assert names_listed(admin_client.get(CHANGELIST, {"q": "fay@example"}).content.decode()) == {"Fay Failed"}


def retry(admin_client: Client, *customers: Customer) -> str:
    """Run the admin's "Retry onboarding" on `customers` as an operator would; return the page's text."""
    chosen = [customer.pk for customer in customers]
    response = admin_client.post(CHANGELIST, {"action": "retry_onboarding", "_selected_action": chosen}, follow=True)
    assert response.status_code == 200
    return html.unescape(response.content.decode())


def test_retry_onboarding_requeues_only_failed_customers_and_says_why_others_were_skipped(
    admin_client: Client, customers
) -> None:
    owner = Owner("host-a", 0, "key-a", "1-a")
    claimed = Customer.objects.create(name="Carl Claimed", email="carl@example.com", claimed_by=str(owner),
                                      claim_expires_at=timezone.now() + timedelta(minutes=1))
    before = {c.pk: (c.attempts, c.claimed_by, c.failed_at) for c in Customer.objects.all()}
    page = retry(admin_client, *customers.values(), claimed)
    assert ("2 customer(s) re-queued for onboarding. 4 skipped: 1 already onboarded, "
            "1 being onboarded right now, 2 still in the queue, not failed.") in page
    failed = Customer.objects.get(pk=customers["failed"].pk)
    assert failed.onboarding_state == OnboardingState.WAITING
    assert (failed.failed_at, failed.attempts, failed.claimed_by) == (None, 0, "")
    # One needing attention too, once the operator has looked: with fresh counts.
    attention = Customer.objects.get(pk=customers["attention"].pk)
    assert attention.onboarding_state == OnboardingState.WAITING
    assert (attention.attention_at, attention.attention_reason, attention.unknown_outcomes) == (None, "", 0)
    for customer in Customer.objects.exclude(pk__in=[failed.pk, attention.pk]):
        assert (customer.attempts, customer.claimed_by, customer.failed_at) == before[customer.pk], customer


def test_retry_of_a_customer_being_onboarded_never_sends_a_second_email(admin_client: Client, settings) -> None:
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    customer, _ = customer_create(name="Ada", email="ada@example.com")
    owner = Owner("host-a", 0, "key-a", "1-a")
    [claimed] = onboarding.customers_claim(owner=owner, now=timezone.now(), limit=1)
    page = retry(admin_client, customer)
    assert "0 customer(s) re-queued for onboarding. 1 skipped: 1 being onboarded right now." in page
    # The daemon that holds the claim finishes; another daemon then looks for work.
    assert onboarding.customer_onboard(customer=claimed, owner=owner).outcome is onboarding.Outcome.ONBOARDED
    other = OnboardingDaemon(instance=1)
    other.setup()
    other.tick(timezone.now())
    assert len(mail.outbox) == 1 and Onboarding.objects.filter(customer=customer).count() == 1


def test_markup_in_customer_fields_is_escaped(admin_client: Client) -> None:
    evil = Customer.objects.create(name="<script>alert(1)</script>", email="x@example.com",
                                   last_error="<img src=x onerror=alert(2)>", attempts=1)
    for url in [CHANGELIST, f"{CHANGELIST}{evil.pk}/change/"]:
        html = admin_client.get(url).content.decode()
        assert "<script>alert(1)" not in html and "<img src=x" not in html
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_the_admin_needs_staff(client: Client, django_user_model, customers) -> None:
    assert client.get(CHANGELIST).status_code == 302
    django_user_model.objects.create_user("visitor", password="pw-not-staff-123")
    client.login(username="visitor", password="pw-not-staff-123")
    response = client.get(CHANGELIST)
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
