"""The site's own middleware: refuse undecodable charsets; let loopback probes reach health and metrics; a
database outage is a 503 to retry, not a server error."""
from __future__ import annotations

import codecs
import ipaddress
import logging
from collections.abc import Callable

from django.db import DEFAULT_DB_ALIAS, InterfaceError, OperationalError, connections
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest
from django.http.request import split_domain_port
from django.urls import Resolver404, resolve

from daemons.console.web.views import from_loopback

logger = logging.getLogger("signup_site.requests")

# What browsers and ordinary clients declare. Others, such as "base64", "rot13" or
# "idna", make Django's parsers raise instead of decode, which would be a server error.
DECODABLE_CHARSETS = frozenset({"utf-8", "ascii", "iso8859-1", "cp1252"})


def charset_guard(get_response: Callable[[HttpRequest], HttpResponse]) -> Callable[[HttpRequest], HttpResponse]:
    """Answer 400 to a request whose Content-Type names a charset outside DECODABLE_CHARSETS.

    Goes before CsrfViewMiddleware, the first thing that reads the body.
    """

    def middleware(request: HttpRequest) -> HttpResponse:
        charset = (request.content_params or {}).get("charset")
        if charset is not None:
            try:
                name = codecs.lookup(charset).name
            except LookupError:
                name = None  # Django ignores a charset it doesn't know and uses UTF-8
            if name is not None and name not in DECODABLE_CHARSETS:
                logger.warning("refused a request declaring charset %r", charset, extra={"action": "bad_charset"})
                return HttpResponseBadRequest("Unsupported charset.", content_type="text/plain")
        return get_response(request)

    return middleware


# The monitoring endpoints a loopback probe may reach by a loopback Host over plain HTTP.
PROBE_URL_NAMES = frozenset({"daemons:health", "daemons:metrics"})


def is_loopback_host(host: str) -> bool:
    """True for a Host header naming this machine by a loopback literal: 127.0.0.1, [::1] or localhost (any port)."""
    domain, _port = split_domain_port(host)
    if domain == "localhost":
        return True
    try:
        return ipaddress.ip_address(domain.strip("[]")).is_loopback
    except ValueError:
        return False


def loopback_probes(get_response: Callable[[HttpRequest], HttpResponse]) -> Callable[[HttpRequest], HttpResponse]:
    """Serve `curl http://127.0.0.1:PORT/daemons/health/` (and metrics) under production settings.

    Production settings refuse such a probe: its Host is not in ALLOWED_HOSTS (400) and it
    is plain HTTP (301 to https). Both rules protect public clients, and a probe from this
    machine is none: so a request to a probe endpoint is answered by its view directly,
    skipping the middleware after this one, only when all of these hold:

    - REMOTE_ADDR is a loopback address (the client is on this machine);
    - no forwarding header is present (X-Forwarded-For/-Proto/-Host, Forwarded, X-Real-IP):
      a reverse proxy on this machine also connects from loopback, but it adds them, so a
      public client relayed by it is never taken for a probe;
    - the Host header is a loopback literal, which no public client's request carries
      through a proxy that sets Host to the site's name.
    Everything else (every public request, and any proxied one) goes through the normal
    chain, with ALLOWED_HOSTS and the HTTPS redirect unchanged. Goes first in MIDDLEWARE.
    """

    def middleware(request: HttpRequest) -> HttpResponse:
        # from_loopback: a loopback REMOTE_ADDR and none of the headers a proxy adds to say whom it relays.
        if (
            is_loopback_host(request.META.get("HTTP_HOST", ""))
            and "HTTP_X_FORWARDED_PROTO" not in request.META
            and from_loopback(request)
        ):
            try:
                match = resolve(request.path_info)
            except Resolver404:
                match = None
            if match is not None and match.view_name in PROBE_URL_NAMES:
                return match.func(request, *match.args, **match.kwargs)
        return get_response(request)

    return middleware



def connection_usable() -> bool:
    """Whether the default database answers now: an error it gave is then no outage."""
    database = connections[DEFAULT_DB_ALIAS]
    try:
        return database.connection is not None and database.is_usable()
    except Exception:  # whatever the driver raises, the database did not answer
        return False


# Seconds a client is asked to wait when the database is away (a restart takes a few).
OUTAGE_RETRY_AFTER = 5


class DatabaseOutage:
    """Answer 503 with Retry-After, not a 500, when a view finds the database unreachable.

    A restart or failover of the database is not a fault of the page or of the visitor: the
    request may simply be sent again, and a signup that was never committed is not lost but
    not yet made. An error from a database that still answers (a missing table, a lock held
    too long) and every other error still reach Django's handler, and so Sentry, as a 500.
    Goes last in MIDDLEWARE, so it is the first to see a view's exception.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not isinstance(exception, (OperationalError, InterfaceError)) or connection_usable():
            return None  # a database that answers and still fails (a missing table, say) is a server error
        logger.error("database unavailable: %s", str(exception).strip().splitlines()[0] if str(exception) else
                     type(exception).__name__, extra={"action": "database_unavailable"})
        response = HttpResponse(
            "<!doctype html><title>Back in a moment</title><h1>Back in a moment</h1>"
            f"<p>We could not save or show this just now. Please try again in {OUTAGE_RETRY_AFTER} seconds.</p>",
            status=503)
        response["Retry-After"] = str(OUTAGE_RETRY_AFTER)
        return response
