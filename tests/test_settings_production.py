"""Production settings: the deploy check, refusing weak keys, and the site under gunicorn with WhiteNoise."""
from __future__ import annotations

import re
import secrets
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from customers.models import Customer
from tests.conftest import BASE_DIR, matched
from tests.webserver import gunicorn

PRODUCTION_ENV = BASE_DIR / "deploy" / "production.env"
HTTPS = {"X-Forwarded-Proto": "https"}


def env_file(path: Path) -> dict[str, str]:
    """KEY=value lines as a shell or systemd's EnvironmentFile= reads them (comments skipped, quotes removed)."""
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, _, value = line.partition("=")
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        values[key] = value
    return values


def strong_key() -> str:
    return secrets.token_urlsafe(50)


def production_env(tmp_path: Path, **overrides: str) -> dict[str, str]:
    """The environment of a production host: deploy/production.env plus the real-environment secrets.

    DATABASE_URL points into `tmp_path` so a test never creates the example's /srv path.
    """
    base = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "LANG": "C.UTF-8", "ENV_FILE": ""}
    return {
        **base,
        **env_file(PRODUCTION_ENV),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "DJANGO_SETTINGS_MODULE": "signup_site.settings",
        "SECRET_KEY": strong_key(),
        **overrides,
    }


def manage(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=60,
        stdin=subprocess.DEVNULL,
    )


def test_production_env_sets_everything_and_holds_no_secret() -> None:
    values = env_file(PRODUCTION_ENV)
    assert "SECRET_KEY" not in values and "SENTRY_DSN" not in values
    assert values["DEBUG"] == "false"
    for key in ["ALLOWED_HOSTS", "CSRF_TRUSTED_ORIGINS", "SECURE_SSL_REDIRECT", "SESSION_COOKIE_SECURE",
                "CSRF_COOKIE_SECURE", "SECURE_HSTS_SECONDS", "SECURE_PROXY_SSL_HEADER", "TRUSTED_PROXIES",
                "GUNICORN_CMD_ARGS", "DATABASE_URL", "STATIC_ROOT", "EMAIL_URL", "SIGNUP_RATE_LIMIT"]:
        assert values.get(key), key
    for value in values.values():
        assert not re.search(r"://[^/@\s]+:[^/@\s]+@", value), f"a password in {value!r}"


def test_check_deploy_passes_with_the_production_env(tmp_path: Path) -> None:
    result = manage(production_env(tmp_path), "check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


@pytest.mark.parametrize(("variable", "check_id"), [
    ("SECURE_SSL_REDIRECT", "security.W008"), ("SESSION_COOKIE_SECURE", "security.W012"),
    ("CSRF_COOKIE_SECURE", "security.W016"),
])
def test_check_deploy_fails_when_a_security_setting_is_off(tmp_path: Path, variable: str, check_id: str) -> None:
    result = manage(production_env(tmp_path, **{variable: "false"}), "check", "--deploy", "--fail-level", "WARNING")
    # That setting's own check, and it alone: not a crash, nor another setting that the override upset.
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith("SystemCheckError: System check identified some issues:"), result.stderr
    assert re.findall(r"\(([\w.]+)\) ", result.stderr) == [check_id], result.stderr
    assert variable in matched(rf"\({re.escape(check_id)}\) [^\n]*", result.stderr)
    assert "System check identified 1 issue (0 silenced)." in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "key, reason",
    [
        (None, "SECRET_KEY must be set in the environment"),
        ("", "SECRET_KEY must be set in the environment"),
        ("short-key", "fewer than 50"),
        ("a" * 60, "fewer than 5 different"),
        ("django-insecure-" + "x1y2z3" * 10, "development key"),
    ],
)
def test_missing_or_weak_secret_key_fails_in_one_clear_line(tmp_path: Path, key: str | None, reason: str) -> None:
    env = production_env(tmp_path)
    del env["SECRET_KEY"]
    if key is not None:
        env["SECRET_KEY"] = key
    result = manage(env, "check")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("configuration error: SECRET_KEY") and reason in result.stderr
    assert "Traceback" not in result.stderr


def test_debug_is_off_unless_the_environment_turns_it_on(tmp_path: Path) -> None:
    env = production_env(tmp_path)
    del env["DEBUG"], env["SECRET_KEY"]
    result = manage(env, "check")
    assert result.returncode == 2 and result.stderr.startswith("configuration error: SECRET_KEY must be set")
    assert "set DEBUG=1" in result.stderr
    assert manage({**env, "DEBUG": "1"}, "check").returncode == 0


@pytest.mark.parametrize(
    "overrides, check_id",
    [
        ({"EMAIL_URL": None}, "customers.E010"),
        ({"EMAIL_URL": "filemail:///tmp/mail"}, "customers.E011"),
        ({"EMAIL_URL": "consolemail://"}, "customers.E011"),
        ({"DATABASE_URL": "sqlite://:memory:"}, "customers.E012"),
        ({"TRUSTED_PROXIES": ""}, "customers.E013"),
        ({"GUNICORN_CMD_ARGS": "--workers 3 --bind unix:/run/signup_site/gunicorn.sock"}, "customers.E014"),
    ],
)
def test_production_fails_closed_in_check_deploy_and_in_the_daemons(
    tmp_path: Path, overrides: dict[str, str | None], check_id: str
) -> None:
    env = production_env(tmp_path)
    for key, value in overrides.items():
        if value is None:
            del env[key]
        else:
            env[key] = value
    checked = manage(env, "check", "--deploy", "--fail-level", "WARNING")
    assert checked.returncode != 0 and check_id in checked.stderr, checked.stdout + checked.stderr
    [line] = [line for line in checked.stderr.splitlines() if check_id in line]
    assert line.count(check_id) == 1  # one clear line for the problem
    daemon = manage({**env, "DAEMONS_RUN_DIR": str(tmp_path / "run"), "DAEMONS_LOG_DIR": str(tmp_path / "log")},
                    "rundaemon", "onboarding", "--once")
    assert daemon.returncode != 0 and check_id in daemon.stderr and "Traceback" not in daemon.stderr
    # In development the same setting is allowed.
    assert check_id not in manage({**env, "DEBUG": "1"}, "check").stderr


def test_a_unix_socket_bind_is_fine_when_the_proxy_on_it_is_trusted(tmp_path: Path) -> None:
    env = production_env(tmp_path, GUNICORN_CMD_ARGS="--bind=unix:/run/signup_site/gunicorn.sock",
                         TRUSTED_PROXIES="unix")
    result = manage(env, "check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode == 0, result.stdout + result.stderr


def test_bad_trusted_proxy_fails_in_one_clear_line(tmp_path: Path) -> None:
    result = manage(production_env(tmp_path, TRUSTED_PROXIES="not-an-ip"), "check")
    assert result.returncode == 2
    assert result.stderr.startswith("configuration error: TRUSTED_PROXIES") and result.stderr.count("\n") == 1


def site_env(tmp_path: Path, **overrides: str) -> dict[str, str]:
    """production_env for a site served on 127.0.0.1, on the test database, with its files in `tmp_path`."""
    from django.conf import settings

    return production_env(
        tmp_path,
        ALLOWED_HOSTS="127.0.0.1",
        STATIC_ROOT=str(tmp_path / "static"),
        DATABASE_URL=f"sqlite:///{settings.DATABASES['default']['NAME']}",
        CACHE_URL="locmemcache://",
        DAEMONS_RUN_DIR=str(tmp_path / "run"),
        DAEMONS_LOG_DIR=str(tmp_path / "log"),
        **overrides,
    )


@pytest.fixture
def production_site(tmp_path: Path, transactional_db):
    """gunicorn with deploy/production.env on the test database, static files collected first.

    The real TLS proxy is played by the client, which sends X-Forwarded-Proto itself.
    """
    env = site_env(tmp_path, EMAIL_URL=f"filemail:///{tmp_path / 'mail'}",
                   SIGNUP_RATE_LIMIT="0")  # the concurrency test sends 50 signups from one address
    collected = manage(env, "collectstatic", "--no-input")
    assert collected.returncode == 0, collected.stderr
    with gunicorn(env, tmp_path / "gunicorn.log", workers=3, threads=4) as server:
        yield server


@pytest.mark.process
def test_production_site_redirects_to_https_and_sets_security_headers(production_site) -> None:
    plain = production_site.request("GET", "/", keep_cookies=False)
    assert plain.status == 301 and plain.headers["location"] == "https://127.0.0.1/"

    page = production_site.request("GET", "/", headers=HTTPS)
    assert page.status == 200
    assert page.headers["strict-transport-security"] == "max-age=31536000; includeSubDomains; preload"
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["x-content-type-options"] == "nosniff"
    cookie = page.headers["set-cookie"]
    assert "csrftoken=" in cookie and "Secure" in cookie

    # WhiteNoise serves the collected, hashed stylesheet with a far-future cache lifetime.
    css_path = matched(r'href="(/static/customers/site\.[0-9a-f]{12}\.css)"', page.text, group=1)
    css = production_site.request("GET", css_path, headers={**HTTPS, "Accept-Encoding": "gzip"})
    assert css.status == 200 and css.headers["content-type"].startswith("text/css")
    assert "max-age=315360000" in css.headers["cache-control"]
    assert css.headers.get("content-encoding") == "gzip"

    missing = production_site.request("GET", "/no-such-page/", headers=HTTPS)
    assert missing.status == 404 and "Page not found" in missing.text and "Traceback" not in missing.text


@pytest.mark.process
def test_fifty_concurrent_identical_signups_make_one_row(production_site) -> None:
    token = production_site.csrf_token(headers=HTTPS)
    body = f"csrfmiddlewaretoken={token}&name=Ada+Lovelace&email=Ada%40Example.com".encode()
    headers = {**HTTPS, "Content-Type": "application/x-www-form-urlencoded", "Referer": "https://127.0.0.1/"}
    start = threading.Barrier(50)
    statuses: list[int] = []
    errors: list[BaseException] = []

    def sign_up() -> None:
        try:
            start.wait(timeout=30)
            statuses.append(production_site.request("POST", "/", body, headers, keep_cookies=False).status)
        except BaseException as exc:  # reported below; a thread can't fail the test itself
            errors.append(exc)

    threads = [threading.Thread(target=sign_up) for _ in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=90)
    assert not errors, errors
    assert sorted(set(statuses)) == [302], statuses
    assert len(statuses) == 50
    assert list(Customer.objects.values_list("email", flat=True)) == ["Ada@example.com"]
    assert "Traceback" not in production_site.log.read_text()


# --- Sentry ----------------------------------------------------------------------------------

SENTRY_PROBE = r"""
import sys
from signup_site.wsgi import application  # starts Sentry, as gunicorn would
import sentry_sdk
from django.test import Client

# The database has no tables, so the signup fails inside the view: a real server error.
response = Client(raise_request_exception=False).post("/", {"name": "Ada Lovelace", "email": "ada@example.com"})
sys.stdout.write(f"status {response.status_code}\n")
try:
    raise RuntimeError("could not mail ada@example.com")
except RuntimeError:
    sentry_sdk.capture_exception()
sentry_sdk.capture_message("welcome for <ada@example.com> bounced")
sentry_sdk.flush(5)
"""


def test_sentry_never_receives_names_or_addresses(tmp_path: Path, sentry_sink) -> None:
    env = production_env(
        tmp_path, SENTRY_DSN=sentry_sink.dsn, DEBUG="true", ALLOWED_HOSTS="testserver",
        SECURE_SSL_REDIRECT="false", CACHE_URL="locmemcache://",
    )
    result = subprocess.run([sys.executable, "-c", SENTRY_PROBE], cwd=BASE_DIR, env=env, capture_output=True,
                            text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert "status 500" in result.stdout, result.stdout + result.stderr
    assert len(sentry_sink.events()) >= 3
    everything = sentry_sink.raw().decode("utf-8", "replace")
    assert "no such table" in everything  # the server error did arrive
    assert "ada@example.com" not in everything and "Ada Lovelace" not in everything
    assert "[email]" in everything


def test_scrub_replaces_addresses_everywhere() -> None:
    from daemons.process.reporting import scrub

    event = {"message": "to a.b+c@example.co.uk", "tags": {"who": "x@y.z"}, "extra": [("ada@example.com", 1)]}
    assert scrub(event) == {"message": "to [email]", "tags": {"who": "[email]"}, "extra": [("[email]", 1)]}


# --- deploy/: one set of paths --------------------------------------------------------------

DEPLOY = BASE_DIR / "deploy"
ABSOLUTE_PATH = re.compile(r"(?<![\w.])/(?:srv|run|var|opt|home|tmp)(?:/[\w.-]+)+")


def ini_value(text: str, key: str) -> str:
    """The value of the first `key=value` line of a unit or supervisord file."""
    return matched(rf"^{re.escape(key)}=(.*)$", text, flags=re.M, group=1).strip()


def test_every_path_in_deploy_agrees() -> None:
    env = env_file(DEPLOY / "production.env")
    unit = (DEPLOY / "onboarding.service").read_text()
    program = (DEPLOY / "onboarding.supervisor.conf").read_text()
    rotate = (DEPLOY / "onboarding.logrotate").read_text()

    project = Path(ini_value(unit, "WorkingDirectory"))
    assert ini_value(program, "directory") == str(project)
    command = f"{project}/.venv/bin/python {project}/manage.py rundaemon onboarding"
    assert ini_value(unit, "ExecStart") == command and ini_value(program, "command") == command
    assert ini_value(unit, "EnvironmentFile") == f"-{project}/.env"

    run_dir = Path(env["DAEMONS_RUN_DIR"])
    assert ini_value(unit, "Environment") == f"DAEMONS_RUN_DIR={run_dir}"
    assert Path("/run") / ini_value(unit, "RuntimeDirectory") == run_dir
    assert Path(ini_value(unit, "PIDFile")) == run_dir / "onboarding.pid"
    assert f"DAEMONS_RUN_DIR={run_dir} " in rotate

    log_dir = Path(env["DAEMONS_LOG_DIR"])
    assert Path(ini_value(program, "stdout_logfile")) == log_dir / "onboarding.log"
    assert Path(rotate.split("\n")[2].split(" {")[0]) == log_dir / "onboarding.log"

    assert env["DATABASE_URL"] == f"sqlite:///{project}/var/db.sqlite3"
    assert Path(env["STATIC_ROOT"]) == project / "var" / "static"

    # And nothing else: every absolute path in every file is under one of the three.
    roots = (project, run_dir, log_dir)
    for path in sorted(DEPLOY.iterdir()):
        for found in ABSOLUTE_PATH.findall(path.read_text()):
            assert any(Path(found) == root or root in Path(found).parents for root in roots), f"{path.name}: {found}"


@pytest.mark.process
def test_loopback_probes_reach_health_and_metrics_under_the_shipped_env_and_public_rules_stay(
        tmp_path: Path, transactional_db) -> None:
    from django.conf import settings

    # deploy/production.env as shipped: ALLOWED_HOSTS=signup.example.com, HTTPS redirect on.
    env = production_env(tmp_path, DATABASE_URL=f"sqlite:///{settings.DATABASES['default']['NAME']}",
                         CACHE_URL="locmemcache://", DAEMONS_RUN_DIR=str(tmp_path / "run"),
                         DAEMONS_LOG_DIR=str(tmp_path / "log"), STATIC_ROOT=str(tmp_path / "static"))
    assert env["ALLOWED_HOSTS"] == "signup.example.com" and env["SECURE_SSL_REDIRECT"] == "true"
    with gunicorn(env, tmp_path / "gunicorn.log", workers=1, threads=2) as server:
        # What `curl http://127.0.0.1:PORT/daemons/health/` sends: a loopback Host, plain HTTP, no proxy headers.
        health = server.request("GET", "/daemons/health/", keep_cookies=False)
        assert health.status in (200, 503) and "daemons" in health.text, (health.status, health.text[:300])
        for host in (f"localhost:{server.port}", f"[::1]:{server.port}"):
            metrics = server.request("GET", "/daemons/metrics/", headers={"Host": host}, keep_cookies=False)
            assert metrics.status == 200 and metrics.headers["content-type"].startswith("text/plain"), host

        # Public clients: exactly as before.
        public = server.request("GET", "/daemons/health/", headers={"Host": "signup.example.com"}, keep_cookies=False)
        assert public.status == 301 and public.headers["location"] == "https://signup.example.com/daemons/health/"
        for headers in ({"Host": "evil.example"},  # not an allowed host
                        # Relayed by a proxy on this host: a client, not a probe, whatever its Host.
                        {"X-Forwarded-For": "203.0.113.9"}, {"X-Forwarded-Proto": "https"},
                        {"Forwarded": "for=203.0.113.9"}, {"X-Real-IP": "203.0.113.9"}):
            refused = server.request("GET", "/daemons/health/", headers=headers, keep_cookies=False)
            assert refused.status == 400, headers
        # Only the probe endpoints: the site itself still wants its own Host.
        assert server.request("GET", "/", keep_cookies=False).status == 400
        assert server.request("GET", "/admin/", keep_cookies=False).status == 400
