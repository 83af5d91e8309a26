"""Huey (SqliteHuey through huey.contrib.djhuey): one task per signup."""
from __future__ import annotations

from huey.contrib.djhuey import db_task

from .work import onboard


@db_task()
def onboard_customer(customer_id: int) -> None:
    onboard(customer_id)


def enqueue(customer_id: int) -> None:
    onboard_customer(customer_id)
