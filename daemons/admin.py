"""The admin: heartbeats and job runs, read-only, and the entry to the daemons dashboard."""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.urls import URLPattern, path

from daemons.cluster.heartbeat import db_now
from daemons.cluster.instances import heartbeat_state
from daemons.console.web import views
from daemons.models import Dashboard, Heartbeat, JobRun
from daemons.process.exits import State

if TYPE_CHECKING:  # the stubs' ModelAdmin is generic; Django's own takes no subscript
    ModelAdmin = admin.ModelAdmin[Any]
else:
    ModelAdmin = admin.ModelAdmin


class ReadOnlyAdmin(ModelAdmin):
    """Rows the daemons write: staff may look, never add or edit."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


class StateFilter(admin.SimpleListFilter):
    """Running, dead or stopped, by the rule in daemons.cluster.instances.heartbeat_state."""

    title = "state"
    parameter_name = "state"

    def lookups(self, request: HttpRequest, model_admin: ModelAdmin) -> list[tuple[str, str]]:
        return [(state, state) for state in (State.RUNNING, State.DEAD, State.STOPPED)]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Heartbeat]) -> QuerySet[Heartbeat]:
        if self.value() is None:
            return queryset
        now = db_now()
        # One row per instance and host: few enough to apply the overdue rule in Python.
        return queryset.filter(pk__in=[beat.pk for beat in queryset if heartbeat_state(beat, now) == self.value()])


@admin.register(Heartbeat)
class HeartbeatAdmin(ReadOnlyAdmin):
    list_display = ("name", "instance", "host", "pid", "state", "last_heartbeat", "last_outcome", "processed",
                    "errors", "status_text")
    list_filter = (StateFilter, "host", "name")
    search_fields = ("name", "host")
    ordering = ("name", "instance", "host")
    actions = ["prune_dead"]

    @admin.display(description="state")
    def state(self, beat: Heartbeat) -> str:
        return heartbeat_state(beat, db_now())

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        # Rows go only through the prune action, which spares running daemons; no delete page.
        return obj is None and admin.ModelAdmin.has_delete_permission(self, request)

    def get_actions(self, request: HttpRequest, action_location: Any = None) -> dict[str, Any]:
        # Django 6.1 asks for the actions of one place (its ActionLocation) and deprecates an override without
        # the parameter; Django 5.2 and 6.0 have no such parameter.
        if action_location is None:
            actions = super().get_actions(request)
        else:
            actions = super().get_actions(request, action_location)  # type: ignore[call-arg]
        actions.pop("delete_selected", None)
        return actions

    @admin.action(description="Prune rows of stopped or dead instances", permissions=["delete"])
    def prune_dead(self, request: HttpRequest, queryset: QuerySet[Heartbeat]) -> None:
        now = db_now()
        beats = list(queryset)
        dead = [beat.pk for beat in beats if heartbeat_state(beat, now) != State.RUNNING]
        Heartbeat.objects.filter(pk__in=dead).delete()
        kept = len(beats) - len(dead)
        self.message_user(request, f"Pruned {len(dead)} dead row(s); kept {kept} running.", messages.SUCCESS)


@admin.register(JobRun)
class JobRunAdmin(ReadOnlyAdmin):
    list_display = ("daemon", "job", "last_run_at", "last_outcome", "last_duration_ms", "next_run_at", "runs",
                    "errors", "last_error_at")
    list_filter = ("last_outcome", "daemon")
    search_fields = ("daemon", "job")
    ordering = ("daemon", "job")


@admin.register(Dashboard)
class DashboardAdmin(ModelAdmin):
    """The dashboard as the admin index's "Daemons > Dashboard": staff see it; controls need change permission."""

    def has_module_permission(self, request: HttpRequest) -> bool:
        return request.user.is_active and request.user.is_staff

    def has_view_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return request.user.is_active and request.user.is_staff

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def get_urls(self) -> list[URLPattern]:
        # Only the page and its controls: the proxy must not expose heartbeat rows to edit.
        prefix = f"{self.opts.app_label}_{self.opts.model_name}_"
        controls = [
            path(f"{action}/", self.admin_site.admin_view(self.control(view)), name=prefix + action)
            for action, view in (("pause", views.pause), ("resume", views.resume), ("run", views.run_now))
        ]
        return [*controls, path("", self.admin_site.admin_view(self.changelist_view), name=prefix + "changelist")]

    def control(self, view: views.ControlView) -> Callable[[HttpRequest], HttpResponse]:
        def guarded(request: HttpRequest) -> HttpResponse:
            if not self.has_change_permission(request):
                raise PermissionDenied
            return view(request, self.admin_site)

        return guarded

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        return views.dashboard(request, self.admin_site, can_control=self.has_change_permission(request))
