"""URLs of the signup site: the public pages, the admin and the staff dashboard."""
from django.contrib import admin
from django.urls import include, path

from customers.dashboard import dashboard_view

admin.site.site_header = "Signup Site administration"
admin.site.site_title = "Signup Site admin"

urlpatterns = [
    # Before admin.site.urls, whose catch-all would otherwise answer this path.
    path("admin/dashboard/", admin.site.admin_view(dashboard_view), name="dashboard"),
    path("admin/", admin.site.urls),
    path("daemons/", include("daemons.urls")),
    path("", include("customers.urls")),
]
