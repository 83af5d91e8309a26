"""WSGI entry point of the signup site: `gunicorn signup_site.wsgi` (see docs/production.md)."""
import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "signup_site.settings")

application = get_wsgi_application()

from daemons.reporting import init_sentry  # noqa: E402  (needs the settings loaded above)

init_sentry()
