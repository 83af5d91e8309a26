"""The operator's view of customers and their onboarding."""
from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.text import Truncator

from .models import Customer, CustomerQuerySet, Onboarding, OnboardingState
from .onboarding import customers_retry_onboarding


class OnboardingStateFilter(admin.SimpleListFilter):
    title = "onboarding state"
    parameter_name = "state"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [(state.value, state.label) for state in OnboardingState]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Customer]) -> QuerySet[Customer]:
        assert isinstance(queryset, CustomerQuerySet)  # the changelist's queryset, from Customer.objects
        value = self.value()
        if value in OnboardingState.values:
            return queryset.in_state(value)
        return queryset


@admin.register(Customer)
class CustomerAdmin(admin.ModelAdmin):
    list_display = ["name", "email", "signed_up", "onboarding_state", "attempts", "short_last_error"]
    list_filter = [OnboardingStateFilter, ("created_at", admin.DateFieldListFilter)]
    search_fields = ["name", "email"]
    date_hierarchy = "created_at"
    ordering = ["-created_at", "-id"]
    readonly_fields = ["created_at", "onboarded_at", "attempts", "last_error", "next_attempt_at", "failed_at",
                       "claimed_by", "claim_expires_at", "unknown_outcomes", "attention_at", "attention_reason"]
    actions = ["retry_onboarding"]
    list_per_page = 50

    @admin.display(description="signed up", ordering="created_at")
    def signed_up(self, obj: Customer):
        return obj.created_at

    @admin.display(description="onboarding")
    def onboarding_state(self, obj: Customer) -> str:
        return obj.onboarding_state.label

    @admin.display(description="last error")
    def short_last_error(self, obj: Customer) -> str:
        # Why it needs attention, when it does: that is what the operator must act on.
        text = obj.attention_reason if obj.onboarding_state is OnboardingState.ATTENTION else obj.last_error
        # The admin escapes it; truncation keeps a long SMTP transcript from swamping the list.
        return Truncator(text).chars(120) if text else "-"

    @admin.action(description="Retry onboarding")
    def retry_onboarding(self, request: HttpRequest, queryset: QuerySet[Customer]) -> None:
        report = customers_retry_onboarding(ids=queryset.values_list("pk", flat=True))
        message = f"{report.requeued} customer(s) re-queued for onboarding."
        if report.skipped:
            reasons = ", ".join(f"{count} {reason}" for reason, count in sorted(report.skipped.items()))
            message += f" {sum(report.skipped.values())} skipped: {reasons}."
        self.message_user(request, message, messages.SUCCESS if report.requeued else messages.WARNING)


@admin.register(Onboarding)
class OnboardingAdmin(admin.ModelAdmin):
    list_display = ["customer", "onboarded_at", "message_id", "onboarded_by"]
