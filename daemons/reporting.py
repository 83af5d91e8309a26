"""Error reporting to Sentry; set up inside the daemon process, after any fork."""
from __future__ import annotations

import logging

from django.conf import settings

logger = logging.getLogger("daemons.reporting")


def init_sentry(daemon_name: str) -> bool:
    """Start sentry-sdk for this daemon if SENTRY_DSN is set; return whether it is on.

    Events carry the tag `daemon` and never personal data (`send_default_pii=False`).
    """
    dsn = getattr(settings, "SENTRY_DSN", "")
    if not dsn:
        return False
    import sentry_sdk
    from sentry_sdk.integrations.django import DjangoIntegration
    from sentry_sdk.integrations.logging import LoggingIntegration

    sentry_sdk.init(
        dsn=dsn,
        environment=getattr(settings, "SENTRY_ENVIRONMENT", None),
        send_default_pii=False,
        # The framework captures exceptions itself, once, with context; logged errors
        # would otherwise be sent a second time.
        integrations=[DjangoIntegration(), LoggingIntegration(event_level=None)],
    )
    sentry_sdk.set_tag("daemon", daemon_name)
    return True


def capture(exc: BaseException, **tags: object) -> None:
    """Send `exc` to Sentry with `tags`, if Sentry is on; never raises."""
    try:
        import sentry_sdk

        if not sentry_sdk.get_client().is_active():
            return
        with sentry_sdk.new_scope() as scope:
            for key, value in tags.items():
                scope.set_tag(key, value)
            sentry_sdk.capture_exception(exc)
    except Exception:  # pragma: no cover - reporting must never take the daemon down
        logger.warning("could not report an error to Sentry", exc_info=True)


def flush(timeout: float = 2.0) -> None:
    try:
        import sentry_sdk

        sentry_sdk.flush(timeout=timeout)
    except Exception:  # pragma: no cover
        pass
