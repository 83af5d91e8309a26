"""HTTP views: the health and metrics endpoints, and the staff dashboard with its pause and run-now buttons."""
from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django import forms
from django.contrib import messages
from django.contrib.admin import AdminSite
from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse, HttpResponseForbidden, HttpResponseRedirect, JsonResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from daemons import conf, registry
from daemons.cluster import control, history
from daemons.cluster.heartbeat import db_now
from daemons.cluster.instances import cluster_instances
from daemons.console import metrics as metrics_module
from daemons.console.health import all_healthy, daemon_states, expected_daemons
from daemons.console.web.chart import Chart, Series, bar_chart
from daemons.models import Heartbeat, JobRun
from daemons.scheduling.jobs import ScheduledDaemon

# Headers a reverse proxy adds: a request carrying one came through a proxy on this host,
# so its loopback REMOTE_ADDR says nothing about the real client.
PROXY_HEADERS = ("HTTP_FORWARDED", "HTTP_X_FORWARDED_FOR", "HTTP_X_REAL_IP", "HTTP_X_FORWARDED_HOST")
PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"


# --- health and metrics -----------------------------------------------------------------


@never_cache
@require_GET
def health(request: HttpRequest) -> JsonResponse:
    """Each expected daemon's state, and only that: 200 when all run (or are paused), else 503."""
    states = daemon_states()
    ok = all_healthy(states)
    return JsonResponse({"status": "ok" if ok else "failing", "daemons": states}, status=200 if ok else 503)


def from_loopback(request: HttpRequest) -> bool:
    """True if the client is this host itself, not a client forwarded by a proxy running here."""
    if any(header in request.META for header in PROXY_HEADERS):
        return False
    try:
        return ipaddress.ip_address(request.META.get("REMOTE_ADDR", "")).is_loopback
    except ValueError:
        return False


def metrics_denied(request: HttpRequest) -> HttpResponse | None:
    """The refusal for a client that may not scrape, or None.

    With DAEMONS_METRICS_TOKEN set, the request needs `Authorization: Bearer <token>`
    (compared in constant time) from anywhere; without it, only loopback clients.
    """
    token = conf.get("METRICS_TOKEN")
    if not token:
        if from_loopback(request):
            return None
        return HttpResponseForbidden("metrics are served to loopback clients only; set DAEMONS_METRICS_TOKEN "
                                     "to allow others\n", content_type="text/plain")
    scheme, _, given = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
    if scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), str(token).encode()):
        return None
    response = HttpResponse("a valid bearer token is required\n", status=401, content_type="text/plain")
    response["WWW-Authenticate"] = 'Bearer realm="daemons metrics"'
    return response


@never_cache
@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus text for every daemon instance in the cluster (see daemons.console.metrics)."""
    denied = metrics_denied(request)
    if denied is not None:
        return denied
    try:
        body = metrics_module.exposition(db_now())
    except DatabaseError:
        # The scrape fails visibly (Prometheus records `up` 0) without a traceback page.
        return HttpResponse("database unavailable\n", status=503, content_type="text/plain")
    return HttpResponse(body, content_type=PROMETHEUS_TEXT)


# --- the dashboard ----------------------------------------------------------------------


@dataclass(frozen=True)
class DaemonChart:
    name: str
    ticks: Chart
    processed: Chart
    total_ticks: int
    total_processed: int
    total_errors: int


@dataclass(frozen=True)
class JobRow:
    daemon: str
    job: str
    run: JobRun | None
    requested: bool


@dataclass(frozen=True)
class ErrorRow:
    source: str
    at: datetime | None
    error: str


def daemon_charts(now: datetime) -> list[DaemonChart]:
    """Ticks and units processed per hour over the last 24 hours, one pair of charts per daemon."""
    charts = []
    for name, hours in history.hourly(now=now, hours=24).items():
        slots = [hour.start.strftime("%H:00") for hour in hours]

        def chart(field: str, singular: str, plural: str, hours: list[history.HourTotals] = hours,
                  slots: list[str] = slots) -> Chart:
            values = [getattr(hour, field) for hour in hours]
            return bar_chart(slots, [Series(field, values, singular, plural)], width=400, height=170, label_every=6)

        charts.append(DaemonChart(
            name=name, ticks=chart("ticks", "tick", "ticks"), processed=chart("processed", "unit", "units"),
            total_ticks=sum(h.ticks for h in hours), total_processed=sum(h.processed for h in hours),
            total_errors=sum(h.errors for h in hours),
        ))
    return charts


def scheduled_jobs() -> list[JobRow]:
    """Every job of every registered scheduled daemon, plus jobs other hosts recorded, with their last run."""
    runs = {(run.daemon, run.job): run for run in JobRun.objects.all()}
    keys = {(name, job) for name in registry.names() if issubclass(cls := registry.get(name), ScheduledDaemon)
            for job in cls.jobs}
    requested = control.pending_runs()
    return [JobRow(daemon, job, runs.get((daemon, job)), (daemon, job) in requested)
            for daemon, job in sorted(keys | set(runs))]


def last_errors(limit: int = 10) -> list[ErrorRow]:
    """The last error of each daemon instance and job that has one, newest first."""
    rows = [ErrorRow(f"{b.name}[{b.instance}]@{b.host}", b.last_tick_at, b.last_error)
            for b in Heartbeat.objects.exclude(last_error="").filter(errors__gt=0)]
    rows += [ErrorRow(f"{r.daemon}.{r.job}", r.last_error_at, r.last_error)
             for r in JobRun.objects.exclude(last_error="").filter(errors__gt=0)]
    rows.sort(key=lambda row: row.at or datetime.min.replace(tzinfo=UTC), reverse=True)
    return rows[:limit]


def dashboard(request: HttpRequest, site: AdminSite, *, can_control: bool) -> HttpResponse:
    """The staff dashboard (served by daemons.admin under the admin's URLs and login)."""
    now = db_now()  # heartbeats are in the database's time; so is every age on the page
    rows = cluster_instances(now=now)
    reported = {row.name for row in rows}
    context = {
        **site.each_context(request),
        "title": "Daemons",
        "now": now,
        "refresh": conf.get("DASHBOARD_REFRESH"),
        "daemons": rows,
        "never_reported": [name for name in expected_daemons() if name not in reported],
        "charts": daemon_charts(now),
        "errors": last_errors(),
        "jobs": scheduled_jobs(),
        "can_control": can_control,
        "urls": {action: reverse(f"{site.name}:daemons_dashboard_{action}")
                 for action in ("changelist", "pause", "resume", "run")},
    }
    return render(request, "daemons/dashboard.html", context)


def known_daemon(name: str) -> bool:
    return name in registry.names() or Heartbeat.objects.filter(name=name).exists()


class InstanceForm(forms.Form):
    name = forms.CharField(max_length=100)
    instance = forms.IntegerField(min_value=0, max_value=2**31 - 1)

    def clean_name(self) -> str:
        name: str = self.cleaned_data["name"]
        if not known_daemon(name):
            raise forms.ValidationError(f"no daemon is called {name!r}")
        return name


class RunForm(forms.Form):
    daemon = forms.CharField(max_length=100)
    job = forms.CharField(max_length=100)

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        assert data is not None  # Form.clean returns cleaned_data
        daemon, job = data.get("daemon"), data.get("job")
        if daemon and job:
            declared = {(row.daemon, row.job) for row in scheduled_jobs()}
            if (daemon, job) not in declared:
                raise forms.ValidationError(f"{daemon} has no scheduled job {job!r}")
        return data


def form_error(form: forms.Form) -> str:
    return "; ".join(f"{'' if field == '__all__' else field + ': '}{' '.join(map(str, errors))}"
                     for field, errors in form.errors.items())


ControlView = Callable[[HttpRequest, AdminSite], HttpResponse]


def control_view(form_class: type[forms.Form], act: Callable[[HttpRequest, dict[str, Any]], str]) -> ControlView:
    """A POST-only view that validates `form_class`, calls `act` and says what it did, then shows the dashboard."""

    def view(request: HttpRequest, site: AdminSite) -> HttpResponse:
        back = reverse(f"{site.name}:daemons_dashboard_changelist")
        if request.method != "POST":
            return HttpResponseRedirect(back)
        form = form_class(request.POST)
        if form.is_valid():
            messages.success(request, act(request, form.cleaned_data))
        else:
            messages.error(request, f"Nothing done: {form_error(form)}")
        return HttpResponseRedirect(back)

    return view


def _pause(request: HttpRequest, data: dict[str, Any]) -> str:
    label = f"{data['name']}[{data['instance']}]"
    if control.pause(data["name"], data["instance"], by=request.user.get_username()):
        return f"Paused {label}: it stops ticking within one interval."
    return f"Already paused: {label}."


def _resume(request: HttpRequest, data: dict[str, Any]) -> str:
    label = f"{data['name']}[{data['instance']}]"
    if control.resume(data["name"], data["instance"]):
        return f"Resumed {label}."
    return f"Not paused: {label}."


def _run(request: HttpRequest, data: dict[str, Any]) -> str:
    from daemons.cluster.wakeup import wake

    if not control.request_run(data["daemon"], data["job"], by=request.user.get_username()):
        return f"Already waiting to run: {data['daemon']}.{data['job']}."
    wake(data["daemon"])  # at once where a wake-up reaches (see daemons.cluster.wakeup.wake); others at their next tick
    return f"Requested: {data['daemon']}.{data['job']} runs at the daemon's next tick."


pause = control_view(InstanceForm, _pause)
resume = control_view(InstanceForm, _resume)
run_now = control_view(RunForm, _run)
