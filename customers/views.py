"""The signup page and its thank-you page."""
from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from .forms import SignupForm
from .services import customer_create


@require_http_methods(["GET", "POST"])
def signup(request: HttpRequest) -> HttpResponse:
    if request.method == "POST":
        form = SignupForm(request.POST)
        if form.is_valid():
            # Known and new addresses get the same page, so the form can't be used to
            # find out who has signed up.
            customer_create(name=form.cleaned_data["name"], email=form.cleaned_data["email"])
            return redirect("customers:thanks")
    else:
        form = SignupForm()
    return render(request, "customers/signup.html", {"form": form})


@require_http_methods(["GET"])
def thanks(request: HttpRequest) -> HttpResponse:
    return render(request, "customers/thanks.html")
