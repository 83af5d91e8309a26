"""The product's settings with Django's psycopg pool instead of persistent connections (latency_pg --pool)."""
from __future__ import annotations

from signup_site.settings import *  # noqa: F403
from signup_site.settings import DATABASES

DATABASES["default"]["CONN_MAX_AGE"] = 0
DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {"min_size": 1, "max_size": 4}
