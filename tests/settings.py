"""Test settings: the project's settings plus a test app with daemons made for the tests.

With TEST_FRAMEWORK_ONLY set (`make test-matrix`), the project is tests/framework_settings.py instead of the
showcase, which is not installed there.
"""
import os

# The project's settings default to production (DEBUG off); the tests run in development
# mode unless a test sets DEBUG itself (its child processes inherit this).
os.environ.setdefault("DEBUG", "true")
# A developer's .env (the one `make run` writes, say) must not reach the tests or their processes.
os.environ["ENV_FILE"] = ""

if not os.environ.get("TEST_FRAMEWORK_ONLY"):
    from signup_site.settings import *  # noqa: F403
    from signup_site.settings import BASE_DIR, DATABASES, INSTALLED_APPS
else:
    from tests.framework_settings import *  # noqa: F403
    from tests.framework_settings import BASE_DIR, DATABASES, INSTALLED_APPS

INSTALLED_APPS = [*INSTALLED_APPS, "tests.testapp"]

# The test database is a real file, so daemon processes started by the tests share it.
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["TEST"] = {
        "NAME": os.environ.get("TEST_SQLITE_PATH", str(BASE_DIR / "var" / "test" / "db.sqlite3"))
    }
    os.makedirs(os.path.dirname(DATABASES["default"]["TEST"]["NAME"]), exist_ok=True)

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

# One rate-limit window for a whole test run (the default is 60 s): a test's few requests must not
# straddle two windows and find the count reset. The tests of the window itself set their own.
SIGNUP_RATE_WINDOW = int(os.environ.get("SIGNUP_RATE_WINDOW", 10**9))

# The supervisor's restart backoff, short for the tests that watch a child die and come back.
for _name in ("DAEMONS_RESTART_BACKOFF", "DAEMONS_RESTART_BACKOFF_CAP"):
    if _name in os.environ:
        globals()[_name] = float(os.environ[_name])
