"""WSGI entry point of the signup site (gunicorn signup_site.wsgi)."""
import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "signup_site.settings")

application = get_wsgi_application()
