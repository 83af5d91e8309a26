"""Customers who signed up, and the record of each one's onboarding."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db import models
from django.db.models import Count, Exists, OuterRef, Q, Subquery
from django.db.models.functions import Lower, Now


class OnboardingState(models.TextChoices):
    WAITING = "waiting", "waiting"
    RETRYING = "retrying", "retrying"
    ONBOARDED = "onboarded", "onboarded"
    FAILED = "failed", "failed"
    # Sent ONBOARDING_MAX_UNKNOWN_OUTCOMES times without ever hearing whether the server took it.
    ATTENTION = "attention", "needs attention"


# The one definition of each onboarding state, as field lookups. The queryset turns them
# into filters and `Customer.onboarding_state` reads them against an instance, so the
# admin, the dashboard, the daemon's status line and the model can never disagree.
# Pending: still to be onboarded by the daemon, now or later (waiting or retrying).
PENDING_LOOKUPS: dict[str, Any] = {"onboarded_at__isnull": True, "failed_at__isnull": True,
                                   "attention_at__isnull": True}
STATE_LOOKUPS: dict[OnboardingState, dict[str, Any]] = {
    OnboardingState.ONBOARDED: {"onboarded_at__isnull": False},
    OnboardingState.FAILED: {"onboarded_at__isnull": True, "failed_at__isnull": False},
    OnboardingState.ATTENTION: {"onboarded_at__isnull": True, "failed_at__isnull": True,
                                "attention_at__isnull": False},
    OnboardingState.RETRYING: {**PENDING_LOOKUPS, "attempts__gt": 0},
    OnboardingState.WAITING: {**PENDING_LOOKUPS, "attempts": 0},
}


def _unclaimed() -> Q:
    """Held by nobody: never claimed, given back, or with a lease that ended by the database's clock."""
    return Q(claimed_by="") | Q(claim_expires_at__lt=Now())


def _matches(obj: models.Model, lookups: dict[str, Any]) -> bool:
    """Whether `obj` satisfies `lookups`; only the lookups STATE_LOOKUPS uses are known."""
    for key, wanted in lookups.items():
        field, _, op = key.partition("__")
        value = getattr(obj, field)
        if op == "isnull":
            ok = (value is None) is wanted
        elif op == "gt":
            ok = value is not None and value > wanted
        elif op == "":
            ok = value == wanted
        else:  # pragma: no cover - a new lookup in STATE_LOOKUPS must be taught here
            raise ValueError(f"unsupported lookup {key!r}")
        if not ok:
            return False
    return True


class CustomerQuerySet(models.QuerySet):
    """Customers by onboarding state: the one place the states are defined as queries."""

    def in_state(self, state: OnboardingState | str) -> CustomerQuerySet:
        return self.filter(**STATE_LOOKUPS[OnboardingState(state)])

    def waiting(self) -> CustomerQuerySet:
        """Never tried yet."""
        return self.in_state(OnboardingState.WAITING)

    def retrying(self) -> CustomerQuerySet:
        """Tried and failed at least once, with attempts left."""
        return self.in_state(OnboardingState.RETRYING)

    def failed(self) -> CustomerQuerySet:
        """Given up on: a permanent rejection or every attempt used."""
        return self.in_state(OnboardingState.FAILED)

    def onboarded(self) -> CustomerQuerySet:
        return self.in_state(OnboardingState.ONBOARDED)

    def needing_attention(self) -> CustomerQuerySet:
        """Not sent again: too many sends whose outcome is unknown (see `Customer.attention_reason`)."""
        return self.in_state(OnboardingState.ATTENTION)

    def pending(self) -> CustomerQuerySet:
        """Waiting or retrying: the daemon still has work to do for them, now or later."""
        return self.filter(**PENDING_LOOKUPS)

    def due(self, now: datetime) -> CustomerQuerySet:
        """Pending customers whose next attempt is not after `now` (claims aside)."""
        return self.pending().filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))

    # Onboarding claims. A claim is `claimed_by` (an onboarding `Owner`'s str: its lock key's prefix, host,
    # instance and process) with a lease to `claim_expires_at`, read by the database's clock so that hosts whose
    # clocks disagree still agree on whose claim is live.

    def unclaimed(self) -> CustomerQuerySet:
        """Held by nobody: never claimed, given back, or with a lease that ended by the database's clock."""
        return self.filter(_unclaimed())

    def claimable(self, owner_prefix: str, gone_holder: Exists | None = None) -> CustomerQuerySet:
        """Free for the owner whose lock key prefix is `owner_prefix` to claim.

        That is: unclaimed, held under that lock key (a dead predecessor's: holding the PID
        lock proves it dead), or held by a process that `gone_holder` (a condition on the
        row's `claimed_by`: see `customers.onboarding.claims.gone_holder`) says stopped or
        died, with the lease the statement's snapshot holds. A locking read on PostgreSQL
        re-checks this filter on a row changed since its statement began, but with the
        heartbeats as they were then: a lease renewed meanwhile (`claims_confirm`, by a
        holder back from a stop) is not the snapshot's, and keeps the claim its holder's.
        """
        free = _unclaimed() | Q(claimed_by__startswith=owner_prefix)
        if gone_holder is not None:
            # The row itself, so one value; the slice says so to Django (6.0 on refuses an unsliced one).
            as_begun = self.model._default_manager.filter(pk=OuterRef("pk")).order_by().values("claim_expires_at")[:1]
            free |= Q(gone_holder) & Q(claim_expires_at=Subquery(as_begun))
        return self.filter(free)

    def held_by(self, owner: object) -> CustomerQuerySet:
        """Not onboarded yet and claimed by `owner` (an onboarding `Owner`, or its str), whatever its lease."""
        return self.filter(claimed_by=str(owner), onboarded_at__isnull=True)

    def held_under(self, owner_prefix: str) -> CustomerQuerySet:
        """Not onboarded yet and claimed by any process under the lock key whose prefix is `owner_prefix`."""
        return self.filter(claimed_by__startswith=owner_prefix, onboarded_at__isnull=True)

    def lease_live(self) -> CustomerQuerySet:
        """Whose claim's lease has not ended by the database's clock: only such a claim may be renewed or recorded."""
        return self.filter(claim_expires_at__gte=Now())

    def onboarding_counts(self) -> dict[OnboardingState, int]:
        """How many customers are in each state, in one query."""
        counts = self.aggregate(
            **{state.value: Count("id", filter=Q(**lookups)) for state, lookups in STATE_LOOKUPS.items()}
        )
        return {state: counts[state.value] for state in STATE_LOOKUPS}


class Customer(models.Model):
    name = models.CharField(max_length=200)
    email = models.EmailField(max_length=254)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    onboarded_at = models.DateTimeField(null=True, blank=True)

    # Onboarding bookkeeping, written only by customers.onboarding.
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    failed_at = models.DateTimeField(null=True, blank=True)
    claimed_by = models.CharField(max_length=200, blank=True, default="")
    claim_expires_at = models.DateTimeField(null=True, blank=True)
    # Sends whose end of DATA went out but whose reply never came (each also counts in `attempts`).
    # Defaults in the database too, so rows inserted by plain SQL (bulk loads, tests) need not name them.
    unknown_outcomes = models.PositiveIntegerField(default=0, db_default=0)
    # Set, with the reason, when the daemon stops sending until a person looks.
    attention_at = models.DateTimeField(null=True, blank=True)
    attention_reason = models.TextField(blank=True, default="", db_default="")

    objects = CustomerQuerySet.as_manager()

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            models.UniqueConstraint(Lower("email"), name="customer_email_unique_ci"),
        ]
        indexes = [
            models.Index(fields=["onboarded_at", "failed_at", "created_at"], name="customer_pending_idx"),
            # Every tick renews and releases by owner; without this each would scan the table.
            models.Index(fields=["claimed_by"], name="customer_claimed_by_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.name} (#{self.pk})"

    @property
    def onboarding_state(self) -> OnboardingState:
        return next(state for state, lookups in STATE_LOOKUPS.items() if _matches(self, lookups))


class Onboarding(models.Model):
    """Exactly one per customer: the unique key is what makes onboarding happen once."""

    customer = models.OneToOneField(Customer, on_delete=models.CASCADE, related_name="onboarding")
    onboarded_at = models.DateTimeField()
    message_id = models.CharField(max_length=255)
    onboarded_by = models.CharField(max_length=200)

    def __str__(self) -> str:
        return f"onboarding of customer #{self.customer_id}"


class SignupRateCounter(models.Model):
    """Signup attempts from one client network in one rate-limit window (customers.ratelimit)."""

    client = models.CharField(max_length=64)  # an IPv4 address or an IPv6 /64, e.g. "2001:db8:1:2::/64"
    window = models.BigIntegerField(db_index=True)  # the window's number since the epoch
    count = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["client", "window"], name="signup_rate_counter_unique")]

    def __str__(self) -> str:
        return f"{self.count} signups from {self.client} in window {self.window}"
