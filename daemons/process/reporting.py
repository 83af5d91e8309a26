"""Error reporting to Sentry without personal data; started in each process, after any fork.

sentry-sdk is optional (the `django-daemon-kit[sentry]` extra) and costs memory, so it is imported
only when it is installed AND `SENTRY_DSN` is set. Without it, errors are logged and nothing more.
"""
from __future__ import annotations

import logging
import re
import sys
from types import ModuleType
from typing import Any

from django.conf import settings

logger = logging.getLogger("daemons.reporting")

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


def before_send(event: Any, hint: dict[str, Any]) -> Any:
    """Sentry's last look at an event: messages, exception values, tags, breadcrumbs, all scrubbed."""
    return scrub(event)


def init_sentry(daemon_name: str | None = None) -> bool:
    """Start sentry-sdk if SENTRY_DSN is set; return whether it is on.

    No personal data leaves the process: `send_default_pii=False` keeps out cookies, user
    data and client addresses; request bodies and frames' local variables (which hold the
    names and addresses being processed, and SQL parameters) are never attached; and
    `before_send` removes addresses that reach messages, exception text or breadcrumbs.
    A daemon's events carry the tag `daemon`.
    """
    dsn = getattr(settings, "SENTRY_DSN", "")
    if not dsn:
        return False
    try:
        import sentry_sdk
        from sentry_sdk.integrations.django import DjangoIntegration
        from sentry_sdk.integrations.logging import LoggingIntegration
    except ImportError:
        # `manage.py check` reports this (daemons.E005); a process started anyway still runs.
        logger.error("SENTRY_DSN is set but sentry-sdk is not installed; errors are only logged. "
                     "Install django-daemon-kit[sentry].", extra={"action": "sentry_missing"})
        return False

    integrations: list[Any] = [DjangoIntegration()]
    if daemon_name is not None:
        # The framework captures a daemon's exceptions itself, once, with context; logged
        # errors would otherwise be sent a second time.
        integrations.append(LoggingIntegration(event_level=None))
    sentry_sdk.init(
        dsn=dsn,
        environment=getattr(settings, "SENTRY_ENVIRONMENT", None),
        send_default_pii=False,
        max_request_body_size="never",
        include_local_variables=False,
        before_send=before_send,
        before_send_transaction=before_send,
        integrations=integrations,
    )
    if daemon_name is not None:
        sentry_sdk.set_tag("daemon", daemon_name)
    return True


def _sentry() -> ModuleType | None:
    """sentry_sdk if something in this process imported it (so it may be on), else None.

    Never imports it: a process without a DSN, or without the package, pays nothing.
    """
    return sys.modules.get("sentry_sdk")


def capture(exc: BaseException, **tags: object) -> None:
    """Send `exc` to Sentry with `tags`, if Sentry is on; never raises."""
    sentry_sdk = _sentry()
    if sentry_sdk is None:
        return
    try:
        if not sentry_sdk.get_client().is_active():
            return
        with sentry_sdk.new_scope() as scope:
            for key, value in tags.items():
                scope.set_tag(key, value)
            sentry_sdk.capture_exception(exc)
    except Exception:  # pragma: no cover - reporting must never take the daemon down
        logger.warning("could not report an error to Sentry", exc_info=True)


def flush(timeout: float = 2.0) -> None:
    """Wait up to `timeout` seconds for Sentry to send queued events, if Sentry is on; never raises."""
    sentry_sdk = _sentry()
    if sentry_sdk is None:
        return
    try:
        sentry_sdk.flush(timeout=timeout)
    except Exception:  # noqa: BLE001  # pragma: no cover - Sentry's own failures never stop a daemon
        pass
