"""The operator's view of customers and their onboarding."""
from __future__ import annotations

from django.contrib import admin

from .models import Customer, Onboarding
from .services import customer_retry_onboarding


@admin.register(Customer)
class CustomerAdmin(admin.ModelAdmin):
    list_display = ["name", "email", "created_at", "onboarding_state", "attempts", "last_error"]
    search_fields = ["name", "email"]
    list_filter = ["created_at"]
    readonly_fields = ["created_at", "onboarded_at", "attempts", "last_error", "next_attempt_at", "failed_at",
                       "claimed_by", "claim_expires_at"]
    actions = ["retry_onboarding"]

    @admin.display(description="onboarding")
    def onboarding_state(self, obj: Customer) -> str:
        return obj.onboarding_state.label

    @admin.action(description="Retry onboarding")
    def retry_onboarding(self, request, queryset) -> None:
        for customer in queryset:
            customer_retry_onboarding(customer=customer)
        self.message_user(request, f"{queryset.count()} customer(s) queued for onboarding again.")


@admin.register(Onboarding)
class OnboardingAdmin(admin.ModelAdmin):
    list_display = ["customer", "onboarded_at", "message_id", "onboarded_by"]
