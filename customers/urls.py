"""URLs of the public signup pages."""
from django.urls import path

from . import views

app_name = "customers"

urlpatterns = [
    path("", views.signup, name="signup"),
    path("thanks/", views.thanks, name="thanks"),
]
