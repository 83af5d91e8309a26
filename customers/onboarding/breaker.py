"""The breaker that tells a mail server refusing everyone from customers with bad addresses."""
from __future__ import annotations

from datetime import datetime

from django.conf import settings
from django.db import transaction
from django.db.models import F

from ..models import Customer
from .failures import MailServerUnavailable, error_describe, is_policy_refusal
from .owner import Owner
from .records import OnboardResult, Outcome, customer_onboarding_failed
from .retry import retry_delay


class Breaker:
    """Tells a mail server that refuses everyone from customers whose addresses are bad.

    A relay without its credentials, or a provider's sandbox, answers every recipient
    with a permanent 5xx; failing each customer would fail the whole backlog. So a
    permanent refusal is held back, nothing recorded, until the next customer's outcome:

    - anything else (an accepted message, a temporary failure) ends the streak, and the
      held refusals are the customers' own: `settle` records them;
    - ONBOARDING_BREAKER_THRESHOLD different customers refused in a row, or one 5.7.x
      (policy) reply, mean the server is the problem: the breaker trips. The held
      customers are given back with no attempt counted, due again after a short delay so
      that others are tried first, and `MailServerUnavailable` is raised.

    A customer given back this way is a suspect: refused again once the server has
    accepted another message since, the refusal is its own and fails it at once. So a
    few bad addresses that sort next to each other can't stall the queue for ever. Each
    trip also counts as an unknown outcome for the customers it gives back: the last few
    of a queue, refused with nobody else to prove the server, are marked as needing
    attention after ONBOARDING_MAX_UNKNOWN_OUTCOMES trips instead of being held for ever.
    A policy reply blames the server alone, and counts nothing.
    """

    def __init__(self, owner: Owner, threshold: int | None = None) -> None:
        self.owner = owner
        self.threshold = settings.ONBOARDING_BREAKER_THRESHOLD if threshold is None else threshold
        self.held: list[tuple[Customer, BaseException]] = []
        self.suspects: set[int] = set()
        self.proven = False  # the server accepted a message since the last trip

    def accepted(self) -> None:
        """The server accepted a message."""
        self.proven = True

    def refused(self, customer: Customer, exc: BaseException, now: datetime) -> bool:
        """Take a permanent refusal: True if it is held back, False if the customer is to blame now.

        Raises `MailServerUnavailable` when the refusal trips the breaker.
        """
        if customer.pk in self.suspects and self.proven:
            self.suspects.discard(customer.pk)
            return False
        self.held.append((customer, exc))
        policy = is_policy_refusal(exc)
        if policy or len({held.pk for held, _ in self.held}) >= self.threshold:
            self.trip(now, reason="a policy refusal (5.7.x)" if policy else
                      f"{len(self.held)} different recipients refused in a row", server_to_blame=policy)
        return True

    def trip(self, now: datetime, *, reason: str, server_to_blame: bool = False) -> None:
        held, self.held = self.held, []
        ids = [customer.pk for customer, _ in held]
        last_error = error_describe(held[-1][1])
        # Unless a policy reply put the blame on the server, whose refusal it was is unknown: counted as an
        # unknown outcome, so customers refused trip after trip with nobody else to prove the server (the last
        # few of a queue, say) are not held for ever.
        unknown = 0 if server_to_blame else 1
        with transaction.atomic():
            for customer, exc in held:
                Customer.objects.held_by(self.owner).filter(pk=customer.pk).update(
                    claimed_by="", claim_expires_at=None, next_attempt_at=now + retry_delay(1),
                    last_error=error_describe(exc), unknown_outcomes=F("unknown_outcomes") + unknown)
            Customer.objects.filter(pk__in=ids, unknown_outcomes__gte=settings.ONBOARDING_MAX_UNKNOWN_OUTCOMES,
                                    claimed_by="", onboarded_at__isnull=True, attention_at__isnull=True).update(
                attention_at=now, next_attempt_at=None, attention_reason=(
                    "refused every time it was tried, by a mail server that accepted nobody else meanwhile (the "
                    "address may be bad, or the server may refuse everyone); check, then retry. Last: "
                    f"{last_error}")[:2000])
        self.suspects.update(ids)
        self.proven = False
        raise MailServerUnavailable(f"the mail server refuses everyone: {reason}; last reply: {last_error}")

    def settle(self, now: datetime) -> list[OnboardResult]:
        """Record the held refusals as the customers' own failures; return what was recorded."""
        results = []
        for customer, exc in self.held:
            row = customer_onboarding_failed(customer=customer, owner=self.owner, error=exc, now=now)
            if row is not None:
                results.append(OnboardResult(Outcome.FAILED if row.failed_at else Outcome.RETRY, row,
                                             error_describe(exc)))
        self.held.clear()
        return results
