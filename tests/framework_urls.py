"""The URLs of tests/framework_settings.py: the admin (with the daemons' dashboard) and the framework's endpoints."""
from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("daemons/", include("daemons.urls")),
]
