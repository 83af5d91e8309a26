"""Putting failed customers, and those needing attention, back in the queue (the admin's retry)."""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from django.db import connection, transaction

from ..models import Customer, OnboardingState
from .owner import onboarding_wake


@dataclass(frozen=True)
class RetryReport:
    """What `customers_retry_onboarding` did: how many were re-queued, and how many skipped and why."""

    requeued: int
    skipped: dict[str, int]  # reason -> how many


# Why a customer chosen for a retry was left alone, by its state.
RETRY_SKIP_REASONS = {
    OnboardingState.ONBOARDED: "already onboarded",
    OnboardingState.WAITING: "still in the queue, not failed",
    OnboardingState.RETRYING: "still in the queue, not failed",
}


BEING_ONBOARDED = "being onboarded right now"


@transaction.atomic
def customers_retry_onboarding(*, ids: Iterable[int]) -> RetryReport:
    """Put the failed customers, and those needing attention, among `ids` back in the queue with fresh counts.

    Only those are touched, and never one a daemon holds a live claim on: the
    UPDATE itself carries both conditions, so a customer claimed in the meantime is left
    alone and can't be emailed twice. The others are counted by reason. The onboarding
    daemon is woken once the transaction commits.
    """
    chosen = Customer.objects.filter(pk__in=list(ids))
    stopped = chosen.failed() | chosen.needing_attention()
    retryable = stopped.unclaimed()
    if connection.features.has_select_for_update:
        retryable = retryable.select_for_update()
    retry_ids = list(retryable.values_list("pk", flat=True))
    skipped = Counter(_retry_skip_reason(customer) for customer in chosen.exclude(pk__in=retry_ids))
    requeued = retryable.filter(pk__in=retry_ids).update(
        failed_at=None, attempts=0, next_attempt_at=None, claimed_by="", claim_expires_at=None,
        unknown_outcomes=0, attention_at=None, attention_reason=""
    )
    if requeued < len(retry_ids):  # claimed between the read and the UPDATE
        skipped[BEING_ONBOARDED] += len(retry_ids) - requeued
    if requeued:
        transaction.on_commit(onboarding_wake)
    return RetryReport(requeued=requeued, skipped=dict(skipped))


def _retry_skip_reason(customer: Customer) -> str:
    if customer.claimed_by and customer.onboarded_at is None:
        return BEING_ONBOARDED
    return RETRY_SKIP_REASONS[customer.onboarding_state]
