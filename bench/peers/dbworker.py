"""django-tasks with its database backend: one task per signup."""
from __future__ import annotations

from django_tasks import task

from .work import onboard


@task()
def onboard_customer(customer_id: int) -> None:
    onboard(customer_id)


def enqueue(customer_id: int) -> None:
    onboard_customer.enqueue(customer_id)
