"""The signup page, its thank-you page and the page a too-eager client gets."""
from __future__ import annotations

import logging

from django.http import HttpRequest, HttpResponse, QueryDict
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from .forms import SignupForm
from .ratelimit import client_ip, signup_rate_hit
from .signup import customer_create

logger = logging.getLogger("customers.signup")


@require_http_methods(["GET", "POST"])
def signup(request: HttpRequest) -> HttpResponse:
    """Show the form; on a valid POST store the customer and go to the thank-you page.

    Known and new addresses get the same page, so the form can't tell anyone who has
    signed up. A filled-in honeypot gets the thank-you page too, and nothing is stored.
    Logs carry ids and actions, never what the person typed.
    """
    if request.method == "POST":
        ip = client_ip(request)
        verdict = signup_rate_hit(ip)
        if not verdict.allowed:
            logger.warning(
                "signup refused: rate limit", extra={"action": "signup_rate_limited", "client_ip": ip}
            )
            response = render(request, "customers/too_many.html", {"retry_after": verdict.retry_after}, status=429)
            response["Retry-After"] = str(verdict.retry_after)
            return response
        form = SignupForm(post_data(request))
        if form.is_valid():
            if form.is_bot():
                logger.info("signup dropped: honeypot filled", extra={"action": "signup_honeypot", "client_ip": ip})
            else:
                customer, created = customer_create(name=form.cleaned_data["name"], email=form.cleaned_data["email"])
                logger.info(
                    "signup of customer %s (%s)", customer.pk, "new" if created else "known address",
                    extra={"action": "signup", "customer_id": customer.pk, "new_customer": created},
                )
            return redirect("customers:thanks")
        logger.info(
            "signup form refused: %s", ", ".join(sorted(form.errors)),
            extra={"action": "signup_invalid", "fields": sorted(form.errors)},
        )
        status = 400
    else:
        form = SignupForm()
        status = 200
    return render(request, "customers/signup.html", {"form": form}, status=status)


def post_data(request: HttpRequest) -> QueryDict:
    """The POSTed fields, with bytes that are not UTF-8 turned into U+FFFD.

    Django decodes a urlencoded body that isn't UTF-8 as Latin-1, which would store
    mojibake as a valid name; decoding with replacement makes the form refuse it.
    """
    if request.content_type == "application/x-www-form-urlencoded":
        try:
            request.body.decode("utf-8")
        except UnicodeDecodeError:
            return QueryDict(request.body.decode("utf-8", errors="replace"), encoding="utf-8")
    return request.POST


@require_http_methods(["GET"])
def thanks(request: HttpRequest) -> HttpResponse:
    return render(request, "customers/thanks.html")
