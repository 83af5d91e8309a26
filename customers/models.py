"""Customers who signed up, and the record of each one's onboarding."""
from __future__ import annotations

from django.db import models
from django.db.models.functions import Lower


class OnboardingState(models.TextChoices):
    WAITING = "waiting", "waiting"
    RETRYING = "retrying", "retrying"
    ONBOARDED = "onboarded", "onboarded"
    FAILED = "failed", "failed"


class Customer(models.Model):
    name = models.CharField(max_length=200)
    email = models.EmailField(max_length=254)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    onboarded_at = models.DateTimeField(null=True, blank=True)

    # Onboarding bookkeeping, written only by customers.services.
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    failed_at = models.DateTimeField(null=True, blank=True)
    claimed_by = models.CharField(max_length=200, blank=True, default="")
    claim_expires_at = models.DateTimeField(null=True, blank=True)

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
        if self.onboarded_at is not None:
            return OnboardingState.ONBOARDED
        if self.failed_at is not None:
            return OnboardingState.FAILED
        if self.attempts:
            return OnboardingState.RETRYING
        return OnboardingState.WAITING


class Onboarding(models.Model):
    """Exactly one per customer: the unique key is what makes onboarding happen once."""

    customer = models.OneToOneField(Customer, on_delete=models.CASCADE, related_name="onboarding")
    onboarded_at = models.DateTimeField()
    message_id = models.CharField(max_length=255)
    onboarded_by = models.CharField(max_length=200)

    def __str__(self) -> str:
        return f"onboarding of customer #{self.customer_id}"
