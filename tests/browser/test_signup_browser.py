"""The signup site in a real Chromium: keyboard signup, errors, duplicates, onboarding, admin, dashboard."""
from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.utils import timezone

from customers.models import Customer, OnboardingState
from tests.conftest import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

STAFF = ("operator", "correct-horse-battery-staple")


def focused_id(page) -> str:
    return page.evaluate("document.activeElement && (document.activeElement.id || document.activeElement.className)")


def keyboard_signup(page, name: str, email: str) -> None:
    """Fill in and send the form with the keyboard alone, as a person without a mouse would."""
    page.goto("/")
    page.keyboard.press("Tab")
    assert focused_id(page) == "skip-link"
    page.keyboard.press("Tab")
    assert focused_id(page) == "brand"
    page.keyboard.press("Tab")
    assert focused_id(page) == "id_name"
    page.keyboard.type(name)
    page.keyboard.press("Tab")
    assert focused_id(page) == "id_email"
    page.keyboard.type(email)
    page.keyboard.press("Tab")  # the honeypot is skipped: next is the button
    assert page.evaluate("document.activeElement.tagName") == "BUTTON"
    page.keyboard.press("Enter")
    page.wait_for_url("**/thanks/")


def test_keyboard_signup_reaches_the_thank_you_page(page, artifacts, screenshot) -> None:
    page.goto("/")
    assert page.get_by_label("Your name").get_attribute("name") == "name"
    assert page.get_by_label("Email address").get_attribute("name") == "email"
    screenshot(page, "signup.png")

    keyboard_signup(page, "Zoë Ångström", "zoe@example.com")
    assert page.get_by_role("heading", level=1).inner_text() == "Thank you for signing up"
    assert "A welcome email is on its way." in page.inner_text("main")
    page.screenshot(path=str(artifacts / "thanks.png"), full_page=True)
    customer = Customer.objects.get()
    assert (customer.name, customer.email) == ("Zoë Ångström", "zoe@example.com")


def test_page_works_on_a_phone_sized_screen(page, artifacts) -> None:
    page.set_viewport_size({"width": 375, "height": 700})
    page.goto("/")
    # Nothing wider than the screen: no sideways scrolling.
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    box = page.get_by_label("Your name").bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= 375
    page.screenshot(path=str(artifacts / "signup-phone.png"), full_page=True)


def test_invalid_email_shows_the_field_error(page) -> None:
    page.goto("/")
    page.get_by_label("Your name").fill("Ada")
    page.get_by_label("Email address").fill("not-an-email")
    page.get_by_role("button", name="Sign up").click()
    error = page.locator("#id_email-error")
    error.wait_for()
    assert "valid email address" in error.inner_text()
    email = page.get_by_label("Email address")
    assert email.get_attribute("aria-describedby") == "id_email-error"
    assert email.get_attribute("aria-invalid") == "true"
    assert email.input_value() == "not-an-email"  # what was typed is kept
    assert page.get_by_role("alert").is_visible()
    assert Customer.objects.count() == 0


def test_same_address_in_another_case_gives_the_same_page_and_one_row(page) -> None:
    keyboard_signup(page, "Ada", "ada@example.com")
    first = page.inner_text("main")
    keyboard_signup(page, "Ada Again", "ADA@Example.COM")
    assert page.inner_text("main") == first
    assert Customer.objects.count() == 1


def test_the_daemon_onboards_within_five_seconds_of_the_click(page, project, settings) -> None:
    # The live server must wake the daemon through the daemon's own run directory.
    settings.DAEMONS_RUN_DIR = str(project.run_dir)
    project.start("onboarding")
    page.goto("/")
    page.get_by_label("Your name").fill("Grace Hopper")
    page.get_by_label("Email address").fill("grace@example.com")
    clicked = time.monotonic()
    page.get_by_role("button", name="Sign up").click()
    page.wait_for_url("**/thanks/")
    wait_for(
        lambda: Customer.objects.filter(email="grace@example.com", onboarded_at__isnull=False).exists(),
        timeout=5.0, message="onboarded_at to be set",
    )
    assert time.monotonic() - clicked < 5.0
    assert "grace@example.com" in "".join(p.read_text() for p in (project.tmp / "mail").glob("*"))


def admin_login(page, django_user_model) -> None:
    django_user_model.objects.create_superuser(STAFF[0], "operator@example.com", STAFF[1])
    page.goto("/admin/login/?next=/admin/")
    page.get_by_label("Username").fill(STAFF[0])
    page.get_by_label("Password").fill(STAFF[1])
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url("**/admin/")


def test_staff_filters_failed_customers_and_retries_one(page, django_user_model) -> None:
    now = timezone.now()
    Customer.objects.create(name="Wendy Waiting", email="wendy@example.com")
    Customer.objects.create(name="Otto Onboarded", email="otto@example.com", onboarded_at=now)
    first = Customer.objects.create(name="Fay Failed", email="fay@example.com", attempts=5, failed_at=now,
                                    last_error="SMTPRecipientsRefused: 550 mailbox unavailable")
    Customer.objects.create(name="Finn Failed", email="finn@example.com", attempts=5, failed_at=now,
                            last_error="SMTPRecipientsRefused: 550 mailbox unavailable")
    admin_login(page, django_user_model)
    page.locator("tr.model-customer th a").click()  # the Customers model, not the app
    page.wait_for_url("**/admin/customers/customer/")
    page.locator("#changelist-filter").get_by_role("link", name="failed", exact=True).click()
    page.wait_for_url("**state=failed**")
    rows = page.locator("#result_list tbody tr")
    assert rows.count() == 2
    assert "550 mailbox unavailable" in rows.first.inner_text()
    page.locator("#result_list tbody tr", has_text="Fay Failed").locator("input.action-select").check()
    page.locator("select[name=action]").select_option("retry_onboarding")
    page.get_by_role("button", name="Go").click()
    page.get_by_text("1 customer(s) re-queued for onboarding.").wait_for()
    first.refresh_from_db()
    assert first.onboarding_state == OnboardingState.WAITING
    assert Customer.objects.get(email="finn@example.com").onboarding_state == OnboardingState.FAILED


def test_dashboard_renders_its_chart_and_links_the_daemons_dashboard(page, django_user_model, screenshot) -> None:
    now = timezone.now()
    for hours_ago, count in [(1, 3), (2, 5), (4, 2), (7, 6), (12, 4), (20, 1)]:
        for n in range(count):
            c = Customer.objects.create(name=f"Customer {hours_ago}-{n}", email=f"c{hours_ago}-{n}@example.com")
            created = now - timedelta(hours=hours_ago, minutes=n)
            Customer.objects.filter(pk=c.pk).update(created_at=created, onboarded_at=created + timedelta(seconds=2))
    Customer.objects.create(name="Nina New", email="nina@example.com")
    page.set_viewport_size({"width": 1280, "height": 900})
    admin_login(page, django_user_model)
    page.goto("/admin/dashboard/")
    chart = page.locator("svg#activity-chart")
    chart.wait_for()
    box = chart.bounding_box()
    assert box["width"] > 300 and box["height"] > 150
    assert chart.locator("rect.signups").count() == 24
    tall_bars = chart.evaluate("svg => [...svg.querySelectorAll('rect')].filter(r => r.getBBox().height > 0).length")
    assert tall_bars >= 12
    assert "22 signups and 21 onboardings" in page.inner_text("#content-main")
    screenshot(page, "dashboard.png")
    page.get_by_role("link", name="daemons dashboard").click()
    page.wait_for_url("**/admin/daemons/dashboard/")
    assert page.get_by_role("heading", name="Health").is_visible()
