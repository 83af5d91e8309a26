"""System checks for the showcase's own settings: what would make onboarding break its promise."""
from __future__ import annotations

import shlex
from collections.abc import Sequence
from typing import Any

from django.apps import AppConfig
from django.conf import settings
from django.core.checks import CheckMessage, Error, register

POSITIVE_SETTINGS = (
    "ONBOARDING_INTERVAL_SECONDS", "ONBOARDING_BATCH_SIZE", "ONBOARDING_MAX_ATTEMPTS", "ONBOARDING_LEASE_SECONDS",
    "ONBOARDING_BREAKER_THRESHOLD", "ONBOARDING_RETRY_BASE_SECONDS", "ONBOARDING_RETRY_MAX_SECONDS",
    "ONBOARDING_SEND_DEADLINE_SECONDS", "ONBOARDING_SMTP_TIMEOUT_SECONDS", "ONBOARDING_FINAL_REPLY_TIMEOUT_SECONDS",
    "ONBOARDING_MAX_UNKNOWN_OUTCOMES", "ONBOARDING_SEND_CONCURRENCY",
)


@register()
def check_onboarding_settings(app_configs: Sequence[AppConfig] | None = None, **kwargs: Any) -> list[CheckMessage]:
    """Every ONBOARDING_* number is positive, and a lease outlasts what may happen between renewals.

    The daemon renews its claims when a third of the lease has passed, checked between
    emails; one email may take the whole send deadline. So a lease of at least three
    deadlines is never outlived by a live claim.
    """
    errors: list[CheckMessage] = []
    for name in POSITIVE_SETTINGS:
        value = getattr(settings, name)
        if not (isinstance(value, (int, float)) and value > 0):
            errors.append(Error(f"{name} must be greater than 0, got {value!r}", id="customers.E001"))
    if errors:
        return errors
    lease, deadline = settings.ONBOARDING_LEASE_SECONDS, settings.ONBOARDING_SEND_DEADLINE_SECONDS
    # Relative slack: the default deadline is lease / 3, which floats may round up.
    if lease < 3 * deadline * (1 - 1e-9):
        errors.append(Error(
            f"ONBOARDING_LEASE_SECONDS ({lease:g}) must be at least three times ONBOARDING_SEND_DEADLINE_SECONDS "
            f"({deadline:g}), or a slow email could outlive its claim", id="customers.E002"))
    if settings.ONBOARDING_SMTP_TIMEOUT_SECONDS > deadline:
        errors.append(Error(
            f"ONBOARDING_SMTP_TIMEOUT_SECONDS ({settings.ONBOARDING_SMTP_TIMEOUT_SECONDS:g}) must not exceed "
            f"ONBOARDING_SEND_DEADLINE_SECONDS ({deadline:g})", id="customers.E003"))
    return errors


# Backends that only pretend to send: a customer would be marked onboarded with no email sent.
NON_DELIVERING_BACKENDS = {
    "django.core.mail.backends.filebased.EmailBackend": "writes files",
    "django.core.mail.backends.console.EmailBackend": "prints to the console",
    "django.core.mail.backends.locmem.EmailBackend": "keeps messages in memory",
    "django.core.mail.backends.dummy.EmailBackend": "discards messages",
}


def gunicorn_binds(args: str) -> list[str]:
    """The --bind/-b values in a GUNICORN_CMD_ARGS string."""
    words = shlex.split(args)
    binds = []
    for index, word in enumerate(words):
        if word in ("--bind", "-b") and index + 1 < len(words):
            binds.append(words[index + 1])
        elif word.startswith("--bind="):
            binds.append(word.partition("=")[2])
        elif word.startswith("-b") and len(word) > 2:
            binds.append(word[2:])
    return binds


@register()
def check_production(app_configs: Sequence[AppConfig] | None = None, **kwargs: Any) -> list[CheckMessage]:
    """With DEBUG off, refuse (as errors, so the site's commands and the daemons stop) a setup that would lie.

    - no EMAIL_URL, or a mail backend that doesn't deliver: customers would be marked
      onboarded while their mail goes nowhere;
    - a database private to each process (SQLite in memory): the signup rate limit's
      counters (and everything else) would not be shared;
    - client addresses that can't be told apart, so the rate limit would put every
      client in one bucket: behind a proxy (SECURE_PROXY_SSL_HEADER set) with no
      TRUSTED_PROXIES, or gunicorn bound to a Unix socket (empty REMOTE_ADDR) without
      "unix" in TRUSTED_PROXIES.
    """
    if settings.DEBUG:
        return []
    errors: list[CheckMessage] = []
    if not getattr(settings, "EMAIL_URL", ""):
        errors.append(Error("EMAIL_URL is not set; with DEBUG off the welcome emails need a real mail server, "
                            "e.g. EMAIL_URL=smtp+tls://mail.example.com:587", id="customers.E010"))
    elif settings.EMAIL_BACKEND in NON_DELIVERING_BACKENDS:
        what = NON_DELIVERING_BACKENDS[settings.EMAIL_BACKEND]
        errors.append(Error(f"EMAIL_URL names a mail backend that {what} instead of sending; with DEBUG off "
                            f"use an SMTP server, e.g. EMAIL_URL=smtp+tls://mail.example.com:587",
                            id="customers.E011"))
    database = settings.DATABASES["default"]
    name = str(database["NAME"])
    if database["ENGINE"] == "django.db.backends.sqlite3" and (name in ("", ":memory:") or "mode=memory" in name):
        errors.append(Error("DATABASE_URL is an in-memory SQLite database, private to each process: the site, "
                            "the daemons and the signup rate limit's counters need one shared database",
                            id="customers.E012"))
    trusted = settings.TRUSTED_PROXY_NETWORKS or settings.TRUSTED_PROXY_UNIX
    if getattr(settings, "SECURE_PROXY_SSL_HEADER", None) and not trusted:
        errors.append(Error("SECURE_PROXY_SSL_HEADER says the site is behind a proxy, but TRUSTED_PROXIES is "
                            "empty: every client would have the proxy's address and share one signup limit; "
                            "set TRUSTED_PROXIES to the proxy's address", id="customers.E013"))
    unix_binds = [bind for bind in gunicorn_binds(settings.GUNICORN_CMD_ARGS) if bind.startswith("unix:")]
    if unix_binds and not settings.TRUSTED_PROXY_UNIX:
        errors.append(Error(f"gunicorn is bound to {unix_binds[0]}, where REMOTE_ADDR is empty: every client would "
                            "share one signup limit; add \"unix\" to TRUSTED_PROXIES so the proxy's "
                            "X-Forwarded-For is read", id="customers.E014"))
    return errors
