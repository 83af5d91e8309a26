"""Error reporting for the web site: Sentry without personal data."""
from __future__ import annotations

import re
from typing import Any

from django.conf import settings

# Anything shaped like an address; over-matching a stray "@" costs nothing.
EMAIL_PATTERN = re.compile(r"[^\s@<>\"',;:()\[\]]+@[^\s@<>\"',;:()\[\]]+")
REDACTED = "[email]"


def scrub(value: Any) -> Any:
    """`value` with every email address replaced by "[email]", through dicts, lists and tuples."""
    if isinstance(value, str):
        return EMAIL_PATTERN.sub(REDACTED, value)
    if isinstance(value, dict):
        return {scrub(key): scrub(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(scrub(item) for item in value)
    return value


def before_send(event: dict[str, Any], hint: dict[str, Any]) -> dict[str, Any]:
    """Sentry's last look at an event: messages, exception values, tags, breadcrumbs, all scrubbed."""
    return scrub(event)


def init_sentry() -> bool:
    """Start sentry-sdk for the web site if SENTRY_DSN is set; return whether it is on.

    `send_default_pii=False` keeps out cookies, user data and client addresses; request
    bodies are never attached; the `before_send` hook removes addresses that reach
    messages, exception text, local variables or breadcrumbs.
    """
    dsn = getattr(settings, "SENTRY_DSN", "")
    if not dsn:
        return False
    import sentry_sdk
    from sentry_sdk.integrations.django import DjangoIntegration

    sentry_sdk.init(
        dsn=dsn,
        environment=getattr(settings, "SENTRY_ENVIRONMENT", None),
        send_default_pii=False,
        # Form bodies hold names and addresses: never attach them to an event.
        max_request_body_size="never",
        # Frames' local variables hold the name and address being saved, and SQL parameters.
        include_local_variables=False,
        before_send=before_send,
        before_send_transaction=before_send,
        integrations=[DjangoIntegration()],
    )
    return True
