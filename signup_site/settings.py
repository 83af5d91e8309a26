"""Settings for the signup site and its daemons, read from the environment (or `.env`)."""
from __future__ import annotations

import ipaddress
import os
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()


def project_path(value: str | Path) -> Path:
    """Resolve a path from the environment against the project root unless it is absolute."""
    path = Path(value)
    return path if path.is_absolute() else BASE_DIR / path


# Variables missing from the environment are read from ENV_FILE: by default `.env` in the project root
# (the first `make run` writes one for development), and none when it is set empty (the tests, which
# must see only the variables they set). The environment wins over the file.
_env_file = os.environ.get("ENV_FILE", ".env")
if _env_file:
    environ.Env.read_env(project_path(_env_file), overwrite=False)

# Production unless the environment says otherwise: a host that forgot to set DEBUG fails
# closed. `make run` turns DEBUG on for development, in its `.env`.
DEBUG = env.bool("DEBUG", default=False)

_DEV_SECRET_KEY = "django-insecure-development-only-key-do-not-use-in-production"
_KEY_ADVICE = ("generate one with: python3 -c 'import secrets; print(secrets.token_urlsafe(50))' "
               "(for development, set DEBUG=1 instead)")


def secret_key_weakness(key: str) -> str:
    """Why `key` is unfit for production, or "" if it is strong (Django's own deploy-check rule)."""
    if key.startswith("django-insecure"):
        return "it is a development key"
    if len(key) < 50:
        return f"it has {len(key)} characters, fewer than 50"
    if len(set(key)) < 5:
        return "it has fewer than 5 different characters"
    return ""


SECRET_KEY = env.str("SECRET_KEY", default="")
if not DEBUG:
    if not SECRET_KEY:
        raise ImproperlyConfigured(f"SECRET_KEY must be set in the environment when DEBUG is off; {_KEY_ADVICE}")
    if weakness := secret_key_weakness(SECRET_KEY):
        raise ImproperlyConfigured(f"SECRET_KEY is too weak ({weakness}); {_KEY_ADVICE}")
elif not SECRET_KEY:
    SECRET_KEY = _DEV_SECRET_KEY

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

# HTTPS. Each defaults to on in production and can be switched off from the
# environment (a site behind a TLS-terminating proxy keeps them on and sets
# SECURE_PROXY_SSL_HEADER so Django knows the original request was HTTPS).
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=not DEBUG)
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=not DEBUG)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=not DEBUG)
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=False)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=False)
_proxy_ssl_header = env.list("SECURE_PROXY_SSL_HEADER", default=[])
# gunicorn reads its options from this variable too; the checks read its --bind.
GUNICORN_CMD_ARGS = env.str("GUNICORN_CMD_ARGS", default="")
if _proxy_ssl_header:
    if len(_proxy_ssl_header) != 2:
        raise ImproperlyConfigured("SECURE_PROXY_SSL_HEADER must be 'HEADER,value', e.g. HTTP_X_FORWARDED_PROTO,https")
    SECURE_PROXY_SSL_HEADER = tuple(_proxy_ssl_header)
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"

# Bodies beyond these limits are refused with 400 before any form sees them.
DATA_UPLOAD_MAX_MEMORY_SIZE = env.int("DATA_UPLOAD_MAX_MEMORY_SIZE", default=64 * 1024)
DATA_UPLOAD_MAX_NUMBER_FIELDS = 100

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "daemons",
    "customers",
]

MIDDLEWARE = [
    # First: a loopback probe of /daemons/health/ or /daemons/metrics/ skips the Host and HTTPS rules.
    "signup_site.middleware.loopback_probes",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "signup_site.middleware.charset_guard",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last: the first to see a view's exception, so a database outage is a 503 to retry.
    "signup_site.middleware.DatabaseOutage",
]

ROOT_URLCONF = "signup_site.urls"

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

WSGI_APPLICATION = "signup_site.wsgi.application"

DATABASES = {"default": env.db_url("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'var' / 'db.sqlite3'}")}
# Daemons call close_old_connections() around every tick: keep a connection for a minute
# rather than reconnecting each tick, and check it before reuse so a restarted server
# costs nothing but a reconnect.
DATABASES["default"]["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=60)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The site and the daemons write to one file from several processes: IMMEDIATE
    # transactions plus WAL and a busy timeout make writers queue instead of failing
    # with "database is locked".
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "transaction_mode": "IMMEDIATE",
            "timeout": env.float("SQLITE_BUSY_TIMEOUT", default=20.0),
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
    )
    try:
        Path(DATABASES["default"]["NAME"]).parent.mkdir(parents=True, exist_ok=True)
    except OSError:
        pass  # reported with its real cause when the first connection fails

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = env.str("TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = project_path(env.str("STATIC_ROOT", default="var/static"))
# Production serves static files with WhiteNoise from STATIC_ROOT (`collectstatic`), with
# hashed names so browsers may cache them forever; development serves them as they are.
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}

# In development WhiteNoise finds files in the apps, as runserver does, and needs no
# collectstatic; in production it serves only what collectstatic put in STATIC_ROOT.
WHITENOISE_USE_FINDERS = DEBUG
WHITENOISE_AUTOREFRESH = DEBUG

# Django's cache. Nothing in the site needs it shared: the signup rate limit counts in
# the database (customers.ratelimit), atomically across every process.
CACHES = {"default": env.cache_url("CACHE_URL", default="locmemcache://signup-site")}

# Signups per client (IPv4 address or IPv6 /64) per window; the next one gets a 429 page.
# 0 switches the limit off.
SIGNUP_RATE_LIMIT = env.int("SIGNUP_RATE_LIMIT", default=10)
SIGNUP_RATE_WINDOW = env.int("SIGNUP_RATE_WINDOW", default=60)
# Proxies (addresses or networks) whose X-Forwarded-For is believed; "unix" means a proxy
# that connects through gunicorn's Unix socket (where REMOTE_ADDR is empty). Empty: the
# client is REMOTE_ADDR, whatever headers say.
TRUSTED_PROXIES = env.list("TRUSTED_PROXIES", default=[])
TRUSTED_PROXY_UNIX = "unix" in TRUSTED_PROXIES
try:
    TRUSTED_PROXY_NETWORKS = [ipaddress.ip_network(proxy, strict=False) for proxy in TRUSTED_PROXIES
                              if proxy != "unix"]
except ValueError as exc:
    raise ImproperlyConfigured(f"TRUSTED_PROXIES: {exc}") from None

# Email. In development the default writes each message as a file under var/mail/, so a
# person running `make run` can read the welcome emails without a mail server. In
# production there is no default: customers.checks refuses to start without a real one.
EMAIL_URL = env.str("EMAIL_URL", default="filemail:///var/mail" if DEBUG else "")
email_config = environ.Env.email_url_config(EMAIL_URL) if EMAIL_URL else {}
vars().update(email_config)
if email_config.get("EMAIL_BACKEND") == "django.core.mail.backends.filebased.EmailBackend":
    EMAIL_FILE_PATH = str(project_path(email_config.get("EMAIL_FILE_PATH") or "var/mail"))
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="Signup Site <welcome@localhost>")

SENTRY_DSN = env.str("SENTRY_DSN", default="")
SENTRY_ENVIRONMENT = env.str("SENTRY_ENVIRONMENT", default="development" if DEBUG else "production")

# The daemon framework: its settings and their defaults live in daemons/conf.py; set here
# only what the environment sets, so no default is written twice.
for _name in ("DAEMONS_RUN_DIR", "DAEMONS_LOG_DIR", "DAEMONS_LOG_LEVEL", "DAEMONS_LOG_FORMAT"):
    if _name in os.environ:
        globals()[_name] = env.str(_name)
if "DAEMONS_STOP_TIMEOUT" in os.environ:
    DAEMONS_STOP_TIMEOUT = env.float("DAEMONS_STOP_TIMEOUT")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {
        "console": {"class": "logging.StreamHandler"},
    },
    "root": {"handlers": ["console"], "level": "WARNING"},
    "loggers": {
        "customers": {"level": "INFO"},
    },
}

# Onboarding (the showcase daemon).
ONBOARDING_INTERVAL_SECONDS = env.float("ONBOARDING_INTERVAL_SECONDS", default=5.0)
ONBOARDING_BATCH_SIZE = env.int("ONBOARDING_BATCH_SIZE", default=50)
ONBOARDING_MAX_ATTEMPTS = env.int("ONBOARDING_MAX_ATTEMPTS", default=5)
# Permanent refusals of this many different customers in a row mean the mail server
# refuses everyone (customers.onboarding.Breaker): nobody is failed, the server is retried.
ONBOARDING_BREAKER_THRESHOLD = env.int("ONBOARDING_BREAKER_THRESHOLD", default=3)
ONBOARDING_LEASE_SECONDS = env.float("ONBOARDING_LEASE_SECONDS", default=60.0)
# Retries wait base * 2^(attempt-1) seconds, capped, with jitter.
ONBOARDING_RETRY_BASE_SECONDS = env.float("ONBOARDING_RETRY_BASE_SECONDS", default=30.0)
ONBOARDING_RETRY_MAX_SECONDS = env.float("ONBOARDING_RETRY_MAX_SECONDS", default=3600.0)
# One email may take at most the send deadline in all, up to the end of DATA (the lease must be
# three of them: customers.checks), and each SMTP read at most the timeout.
ONBOARDING_SEND_DEADLINE_SECONDS = env.float("ONBOARDING_SEND_DEADLINE_SECONDS", default=ONBOARDING_LEASE_SECONDS / 3)
ONBOARDING_SMTP_TIMEOUT_SECONDS = env.float("ONBOARDING_SMTP_TIMEOUT_SECONDS", default=ONBOARDING_LEASE_SECONDS / 12)
# The reply to the end of DATA is awaited this long, the claim renewed meanwhile: RFC 5321
# section 4.5.3.2.6 advises 10 minutes. Without a reply the outcome is unknown (the server
# may have the message): an attempt, resent with the same Message-ID, at most
# ONBOARDING_MAX_UNKNOWN_OUTCOMES times before the customer needs attention.
ONBOARDING_FINAL_REPLY_TIMEOUT_SECONDS = env.float("ONBOARDING_FINAL_REPLY_TIMEOUT_SECONDS", default=600.0)
ONBOARDING_MAX_UNKNOWN_OUTCOMES = env.int("ONBOARDING_MAX_UNKNOWN_OUTCOMES", default=3)
# Welcome emails sent at once, each over its own SMTP connection, so the waits for the server's
# replies overlap. A kill -9 may send again at most this many (with their Message-IDs).
ONBOARDING_SEND_CONCURRENCY = env.int("ONBOARDING_SEND_CONCURRENCY", default=2)

# The daily digest (customers/digest.py): addresses to send it to; empty means active staff users.
DIGEST_RECIPIENTS = env.list("DIGEST_RECIPIENTS", default=[])
