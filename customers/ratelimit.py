"""Per-client-IP limits on signups, counted in Django's cache."""
from __future__ import annotations

import ipaddress
import time
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache
from django.http import HttpRequest


def client_ip(request: HttpRequest) -> str:
    """The address of the client that sent `request`.

    `REMOTE_ADDR` unless it is one of TRUSTED_PROXIES: then X-Forwarded-For is read from
    the right, skipping the trusted proxies, and the first other address is the client.
    A header from an untrusted peer is ignored, so a client can't choose its own address.
    """
    remote = request.META.get("REMOTE_ADDR", "") or "unknown"
    networks = getattr(settings, "TRUSTED_PROXY_NETWORKS", [])
    if not networks:
        return remote
    hops = [hop.strip() for hop in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if hop.strip()]
    client = remote
    while _is_trusted(client, networks) and hops:
        hop = hops.pop()
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            break  # a forged or garbled entry: keep the last address we can vouch for
        client = hop
    return client


def _is_trusted(address: str, networks: list) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    count: int
    retry_after: int


def signup_rate_hit(ip: str, *, now: float | None = None) -> Verdict:
    """Count one signup attempt from `ip` in the current window and say whether it may go on.

    A fixed window of SIGNUP_RATE_WINDOW seconds allows SIGNUP_RATE_LIMIT attempts
    (0 switches the limit off). The counter lives in the default cache, which all server
    processes must share for the limit to hold across them.
    """
    limit = settings.SIGNUP_RATE_LIMIT
    window = max(1, settings.SIGNUP_RATE_WINDOW)
    if limit <= 0:
        return Verdict(allowed=True, count=0, retry_after=0)
    now = time.time() if now is None else now
    slot = int(now // window)
    key = f"signup-rate:{ip}:{slot}"
    # add() is a no-op when the key exists, so concurrent first hits don't reset the count.
    cache.add(key, 0, timeout=window + 1)
    try:
        count = cache.incr(key)
    except ValueError:  # expired between add() and incr()
        cache.add(key, 1, timeout=window + 1)
        count = 1
    retry_after = max(1, int((slot + 1) * window - now))
    return Verdict(allowed=count <= limit, count=count, retry_after=retry_after)
