"""Per-client limits on signups (per IPv4 address, per IPv6 /64), counted atomically in the database."""
from __future__ import annotations

import ipaddress
import time
from dataclasses import dataclass

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.http import HttpRequest

from .models import SignupRateCounter


def client_ip(request: HttpRequest) -> str:
    """The address of the client that sent `request`, or "" if it can't be told.

    `REMOTE_ADDR` unless it is one of TRUSTED_PROXIES (an empty one, from gunicorn's Unix
    socket, counts as trusted when TRUSTED_PROXIES says "unix"): then X-Forwarded-For is
    read from the right, skipping the trusted proxies, and the first other address is the
    client. A header from an untrusted peer is ignored, so a client can't choose its own
    address.
    """
    client = request.META.get("REMOTE_ADDR", "")
    hops = [hop.strip() for hop in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if hop.strip()]
    while _is_trusted(client) and hops:
        hop = hops.pop()
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            break  # a forged or garbled entry: keep the last address we can vouch for
        client = hop
    return client


def _is_trusted(address: str) -> bool:
    if not address:
        return getattr(settings, "TRUSTED_PROXY_UNIX", False)
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in getattr(settings, "TRUSTED_PROXY_NETWORKS", []))


def client_network(ip: str) -> str:
    """The bucket `ip` is counted in: the address itself for IPv4, its /64 for IPv6.

    One IPv6 customer line gets a whole /64, so counting single IPv6 addresses would let
    one client sign up without limit. An IPv4-mapped IPv6 address counts as its IPv4.
    Anything that is not an address (an empty REMOTE_ADDR) is its own bucket, as given.
    """
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return ip[:64]
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    count: int
    retry_after: int


def signup_rate_hit(ip: str, *, now: float | None = None) -> Verdict:
    """Count one signup attempt from `ip`'s network in the current window and say whether it may go on.

    A fixed window of SIGNUP_RATE_WINDOW seconds allows SIGNUP_RATE_LIMIT attempts
    (0 switches the limit off) per `client_network(ip)`.

    The counter is a database row incremented by `UPDATE ... SET count = count + 1`, and
    the count read back in the same transaction, which holds the row (or, on SQLite, the
    database) until it commits: so it is atomic across every process that shares the
    database, whatever the cache. We keep our own counter rather than django-ratelimit
    because that library counts with the cache's `incr`, which Django's DatabaseCache and
    FileBasedCache implement as a read then a write (not atomic) and LocMemCache keeps
    per process: the limit would hold only with Redis or Memcached.
    """
    limit = settings.SIGNUP_RATE_LIMIT
    window = max(1, settings.SIGNUP_RATE_WINDOW)
    if limit <= 0:
        return Verdict(allowed=True, count=0, retry_after=0)
    now = time.time() if now is None else now
    slot = int(now // window)
    client = client_network(ip)
    counters = SignupRateCounter.objects.filter(client=client, window=slot)
    with transaction.atomic():
        if not counters.update(count=F("count") + 1):
            try:
                with transaction.atomic():
                    SignupRateCounter.objects.create(client=client, window=slot, count=1)
            except IntegrityError:  # another process created it first: count on it
                counters.update(count=F("count") + 1)
            else:
                # A new window's first counter: the previous windows' counters are done with.
                SignupRateCounter.objects.filter(window__lt=slot - 1).delete()
        count = counters.values_list("count", flat=True).get()
    retry_after = max(1, int((slot + 1) * window - now))
    return Verdict(allowed=count <= limit, count=count, retry_after=retry_after)
