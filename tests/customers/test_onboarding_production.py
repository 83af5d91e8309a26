"""One customer from signup to welcome email with DEBUG off: production settings, real servers all along.

DEBUG changes what runs: the mail checks (a real SMTP server is required), HTTPS redirects and secure cookies,
the manifest static storage (hashed names, after collectstatic). Here the site is served by gunicorn, the
onboarding daemon runs detached, and the email goes to a real SMTP server on loopback.
"""
from __future__ import annotations

import email
import email.policy
from pathlib import Path

import pytest

from customers.models import Customer, Onboarding
from tests.conftest import matched, wait_for
from tests.test_settings_production import HTTPS, manage, site_env
from tests.webserver import gunicorn

pytestmark = pytest.mark.process


def test_a_signup_on_the_production_site_gets_its_welcome_email(project, smtp_sink, tmp_path: Path) -> None:
    env = site_env(tmp_path, EMAIL_URL=smtp_sink.url)
    assert env["DEBUG"] == "false" and env["SECRET_KEY"]
    project.env = env  # the daemon runs with the site's settings, and is stopped after the test
    checked = manage(env, "check", "--deploy", "--fail-level", "WARNING")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    collected = manage(env, "collectstatic", "--no-input")
    assert collected.returncode == 0, collected.stderr
    project.start("onboarding")

    with gunicorn(env, tmp_path / "gunicorn.log", workers=2, threads=2) as site:
        plain = site.request("GET", "/", keep_cookies=False)
        assert plain.status == 301 and plain.headers["location"] == "https://127.0.0.1/"
        page = site.request("GET", "/", headers=HTTPS)
        assert page.status == 200 and "Secure" in page.headers["set-cookie"]
        # The manifest storage's hashed name, served by WhiteNoise from what collectstatic wrote.
        css = matched(r'href="(/static/customers/site\.[0-9a-f]{12}\.css)"', page.text, group=1)
        assert site.request("GET", css, headers=HTTPS).status == 200
        token = matched(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text, group=1)
        signup = site.request("POST", "/", f"csrfmiddlewaretoken={token}&name=Ada+Lovelace&email=Ada%40Example.com"
                              .encode(), {**HTTPS, "Content-Type": "application/x-www-form-urlencoded",
                                          "Referer": "https://127.0.0.1/"})
        assert signup.status == 302, signup.text[:2000]
        thanks = site.request("GET", signup.headers["location"], headers=HTTPS)
        assert thanks.status == 200
        log = site.log.read_text()

    [received] = wait_for(smtp_sink.received, timeout=30, message="the welcome email at the SMTP server")
    customer = wait_for(lambda: Customer.objects.filter(onboarded_at__isnull=False).first(), timeout=30,
                        message="the customer recorded as onboarded")
    assert customer.email == "Ada@example.com" and received.to == ("ada@example.com",)
    assert received.message_id == Onboarding.objects.get(customer=customer).message_id
    message = email.message_from_bytes(received.raw, policy=email.policy.default)
    assert message["From"] == "Signup Site <welcome@signup.example.com>"
    body = message.get_body(("plain",))
    assert body is not None and "Ada Lovelace" in body.get_content()
    assert "Traceback" not in log
    assert "Traceback" not in project.log_file("onboarding").read_text()
