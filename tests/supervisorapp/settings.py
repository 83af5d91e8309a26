"""The test settings plus this app, so its daemon exists only for the processes that ask for it."""
from tests.settings import *  # noqa: F403
from tests.settings import INSTALLED_APPS

INSTALLED_APPS = [*INSTALLED_APPS, "tests.supervisorapp"]
