"""The framework's endpoints; include them with `path("daemons/", include("daemons.urls"))`.

The staff dashboard needs no include: it lives in the admin (see daemons.admin).
"""
from __future__ import annotations

from django.urls import path

from daemons.console.web import views

app_name = "daemons"

urlpatterns = [
    path("health/", views.health, name="health"),
    path("metrics/", views.metrics, name="metrics"),
]
