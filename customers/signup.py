"""Signing customers up: the stored form of an address and the one write that creates a customer."""
from __future__ import annotations

import unicodedata

from django.db import IntegrityError, transaction

from daemons import wake

from .models import Customer
from .onboarding import DAEMON_NAME


def email_normalize(email: str) -> str:
    """The stored form of an address: NFKC, trimmed, with the domain lower-cased and in ASCII.

    NFKC folds look-alikes such as full-width letters; the domain is IDNA-encoded so
    `bücher.de` and `xn--bcher-kva.de` are one domain and the stored address is ASCII
    whenever the local part is. The local part keeps its case (mail goes to the address
    as given); uniqueness ignores case through the database's `Lower(email)` constraint.
    A domain IDNA refuses stays as typed (lower-cased), for the validator to reject.
    """
    email = unicodedata.normalize("NFKC", email).strip()
    local, at, domain = email.rpartition("@")
    if not at:
        return email
    domain = domain.lower()
    try:
        domain = domain.encode("idna").decode("ascii")
    except UnicodeError:
        pass
    return f"{local}@{domain}"


@transaction.atomic
def customer_create(*, name: str, email: str) -> tuple[Customer, bool]:
    """Create a customer, or return the existing one with that address in any case.

    Returns `(customer, created)`. The database's unique constraint decides, so two
    simultaneous signups with one address make one row. A new customer wakes the
    onboarding daemon once the transaction commits.
    """
    email = email_normalize(email)
    try:
        with transaction.atomic():
            customer = Customer.objects.create(name=name.strip(), email=email)
    except IntegrityError:
        return Customer.objects.get(email__iexact=email), False
    wake(DAEMON_NAME)  # goes out when the transaction commits
    return customer, True
