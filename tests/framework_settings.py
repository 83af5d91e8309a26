"""A minimal project for the framework's own tests, without the showcase: what `make test-matrix` runs them in.

tests/settings.py builds on this module instead of the showcase's settings when TEST_FRAMEWORK_ONLY is set
(noxfile.py sets it): there the framework is the installed wheel, and signup_site, customers and their
dependencies are absent.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

BASE_DIR = Path(__file__).resolve().parent.parent

DEBUG = True
SECRET_KEY = "framework-tests-only-never-in-production"
ALLOWED_HOSTS = ["localhost", "127.0.0.1", "[::1]", "testserver"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "daemons",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]
ROOT_URLCONF = "tests.framework_urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]


def _database(url: str) -> dict[str, Any]:
    """The daemon processes a test starts reach the test's database through DATABASE_URL (tests/conftest.py):
    one SQLite file shared by several processes, so writers queue rather than fail."""
    return {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": url.removeprefix("sqlite:///") if url.startswith("sqlite:///") else str(BASE_DIR / "var" / "db.sqlite"),
        "OPTIONS": {
            "transaction_mode": "IMMEDIATE",
            "timeout": float(os.environ.get("SQLITE_BUSY_TIMEOUT", 20.0)),
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        },
    }


DATABASES = {"default": _database(os.environ.get("DATABASE_URL", ""))}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
TIME_ZONE = "UTC"
STATIC_URL = "static/"

# As the showcase does: Sentry's and the framework's settings come from the environment when a test sets them.
SENTRY_DSN = os.environ.get("SENTRY_DSN", "")
for _name in ("DAEMONS_RUN_DIR", "DAEMONS_LOG_DIR", "DAEMONS_LOG_LEVEL", "DAEMONS_LOG_FORMAT"):
    if _name in os.environ:
        globals()[_name] = os.environ[_name]
if "DAEMONS_STOP_TIMEOUT" in os.environ:
    DAEMONS_STOP_TIMEOUT = float(os.environ["DAEMONS_STOP_TIMEOUT"])
