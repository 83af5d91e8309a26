"""The public pages over HTTP: hostile input, CSRF, methods, honeypot, rate limit, escaping, logs."""
from __future__ import annotations

import logging
import re
from urllib.parse import quote

import pytest
from django.core import mail
from django.db import transaction
from django.db.models.functions import Lower
from django.test import Client
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from customers.forms import text_problem
from customers.models import Customer
from customers.onboarding import welcome_email
from customers.ratelimit import client_ip, client_network, signup_rate_hit
from customers.signup import customer_create, email_normalize
from tests.conftest import matched

SCRIPT = "<script>alert('x')</script>"


@pytest.fixture
def no_rate_limit(settings) -> None:
    settings.SIGNUP_RATE_LIMIT = 0


def post_body(client: Client, body: bytes, content_type: str = "application/x-www-form-urlencoded", **extra):
    return client.generic("POST", "/", body, content_type=content_type, **extra)


def urlencode_any(fields: dict[str, str]) -> bytes:
    """Percent-encode like a client that sends whatever bytes it has, lone surrogates included."""
    pairs = (f"{quote(k)}={quote(v.encode('utf-8', 'surrogatepass'), safe='')}" for k, v in fields.items())
    return "&".join(pairs).encode()


def error_for(html: str, field: str) -> str:
    match = re.search(rf'<p class="field-error" id="id_{field}-error">(.*?)</p>', html, re.S)
    return match.group(1) if match else ""


# --- the page ---------------------------------------------------------------------------------


@pytest.mark.django_db
def test_signup_page_has_labelled_named_inputs_and_no_script(client: Client) -> None:
    response = client.get("/")
    assert response.status_code == 200
    html = response.content.decode()
    assert '<label for="id_name">Your name</label>' in html
    assert '<label for="id_email">Email address</label>' in html
    assert 'name="name" id="id_name"' in html and 'type="email" name="email" id="id_email"' in html
    assert 'name="csrfmiddlewaretoken"' in html
    assert "<script" not in html.lower()
    assert 'lang="en"' in html and 'name="viewport"' in html
    assert "customers/site.css" in html
    # The honeypot is out of the tab order and hidden from assistive technology.
    assert re.search(r'<div class="hp" aria-hidden="true">.*tabindex="-1"', html, re.S)


@pytest.mark.django_db
def test_valid_signup_redirects_to_thanks_and_stores_one_row(client: Client) -> None:
    response = client.post("/", {"name": "Zoë Ångström", "email": "Zoe@Example.COM"})
    assert response.status_code == 302 and response["Location"] == "/thanks/"
    customer = Customer.objects.get()
    assert (customer.name, customer.email) == ("Zoë Ångström", "Zoe@example.com")
    thanks = client.get("/thanks/")
    assert thanks.status_code == 200
    assert "A welcome email is on its way." in thanks.content.decode()


@pytest.mark.django_db
def test_field_errors_are_tied_to_their_inputs(client: Client) -> None:
    response = client.post("/", {"name": "", "email": "not-an-email"})
    assert response.status_code == 400
    html = response.content.decode()
    assert 'aria-invalid="true" aria-describedby="id_name-error"' in html
    assert 'aria-invalid="true" aria-describedby="id_email-error"' in html
    assert error_for(html, "name") == "Please enter your name."
    assert "valid email address" in error_for(html, "email")
    assert 'role="alert"' in html and '<a href="#id_email">' in html
    assert "<title>Error: Sign up" in html
    assert Customer.objects.count() == 0


@pytest.mark.django_db
def test_known_and_new_addresses_get_the_same_response(client: Client) -> None:
    first = client.post("/", {"name": "Ada", "email": "ada@example.com"})
    second = client.post("/", {"name": "Someone Else", "email": "ADA@EXAMPLE.com"})
    assert (first.status_code, first["Location"]) == (second.status_code, second["Location"]) == (302, "/thanks/")
    assert first.content == second.content
    assert Customer.objects.count() == 1
    assert Customer.objects.get().name == "Ada"


@pytest.mark.django_db
def test_unicode_look_alike_addresses_make_one_customer(client: Client) -> None:
    for typed in ["ada@example.com", "\uff21\uff24\uff21@EXAMPLE.com", "ada@\uff45xample.com", "Ada@Example.Com "]:
        assert client.post("/", {"name": "Ada", "email": typed}).status_code == 302
    assert Customer.objects.count() == 1


# --- hostile input ----------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    "fields, field",
    [
        ({"name": "x" * 10_240, "email": "ada@example.com"}, "name"),
        ({"name": "Ada", "email": "a" * 10_240 + "@example.com"}, "email"),
        ({"name": "Ada\x00", "email": "ada@example.com"}, "name"),
        ({"name": "Ada\x07Bell", "email": "ada@example.com"}, "name"),
        ({"name": "Ada\ud800", "email": "ada@example.com"}, "name"),
        ({"name": "Ada\ufffd", "email": "ada@example.com"}, "name"),
        ({"name": "Ada", "email": "ada\ud800@example.com"}, "email"),
        ({"name": " \t ", "email": "ada@example.com"}, "name"),
        ({"name": "Ada", "email": "   "}, "email"),
    ],
)
def test_hostile_input_is_a_form_error_and_stores_nothing(client: Client, fields: dict[str, str], field: str) -> None:
    response = post_body(client, urlencode_any(fields))
    assert response.status_code == 400
    assert error_for(response.content.decode(), field)
    assert Customer.objects.count() == 0


@pytest.mark.django_db
def test_raw_invalid_utf8_is_a_form_error_not_mojibake(client: Client) -> None:
    # Django would decode this body as Latin-1 and store "Ã\x83©"-style mojibake.
    response = post_body(client, b"name=Caf\xc3\xa9\xff&email=ada%40example.com")
    assert response.status_code == 400
    assert "could not be read" in error_for(response.content.decode(), "name")
    assert Customer.objects.count() == 0


@pytest.mark.django_db
def test_valid_utf8_raw_body_is_accepted(client: Client) -> None:
    response = post_body(client, "name=Café&email=ada%40example.com".encode())
    assert response.status_code == 302
    assert Customer.objects.get().name == "Café"


@pytest.mark.django_db
@pytest.mark.parametrize("charset", ["base64", "rot13", "zlib", "idna", "utf-7"])
def test_undecodable_charsets_are_refused_with_400(client: Client, charset: str) -> None:
    body = b'--B\r\nContent-Disposition: form-data; name="name"\r\n\r\nAda\r\n--B--\r\n'
    response = post_body(client, body, content_type=f"multipart/form-data; boundary=B; charset={charset}")
    assert response.status_code == 400
    assert Customer.objects.count() == 0


@pytest.mark.django_db
def test_oversized_body_is_refused_with_400(client: Client) -> None:
    response = post_body(client, b"name=" + b"x" * 100_000 + b"&email=ada%40example.com")
    assert response.status_code == 400
    assert Customer.objects.count() == 0


@pytest.mark.django_db
def test_multipart_with_invalid_utf8_is_a_form_error(client: Client) -> None:
    body = (
        b'--B\r\nContent-Disposition: form-data; name="name"\r\n\r\nAd\xffa\r\n'
        b'--B\r\nContent-Disposition: form-data; name="email"\r\n\r\nada@example.com\r\n--B--\r\n'
    )
    response = post_body(client, body, content_type="multipart/form-data; boundary=B")
    assert response.status_code == 400
    assert "could not be read" in error_for(response.content.decode(), "name")
    assert Customer.objects.count() == 0


@pytest.mark.django_db
def test_script_in_fields_is_escaped_when_shown_back(client: Client) -> None:
    response = client.post("/", {"name": SCRIPT, "email": f"{SCRIPT}@example.com"})
    html = response.content.decode()
    assert response.status_code == 400
    assert "<script" not in html
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in html


# --- CSRF and methods -------------------------------------------------------------------------


@pytest.mark.django_db
def test_post_without_csrf_token_is_403_and_stores_nothing() -> None:
    client = Client(enforce_csrf_checks=True)
    response = client.post("/", {"name": "Ada", "email": "ada@example.com"})
    assert response.status_code == 403
    assert "Please try again" in response.content.decode()
    assert Customer.objects.count() == 0


@pytest.mark.django_db
def test_post_with_csrf_token_from_the_page_is_accepted() -> None:
    client = Client(enforce_csrf_checks=True)
    page = client.get("/").content.decode()
    token = matched(r'name="csrfmiddlewaretoken" value="([^"]+)"', page, group=1)
    response = client.post("/", {"name": "Ada", "email": "ada@example.com", "csrfmiddlewaretoken": token})
    assert response.status_code == 302
    assert Customer.objects.count() == 1


@pytest.mark.django_db
@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"])
@pytest.mark.parametrize("path", ["/", "/thanks/"])
def test_other_methods_are_405(client: Client, method: str, path: str) -> None:
    response = client.generic(method, path)
    assert response.status_code == 405
    assert Customer.objects.count() == 0


@pytest.mark.django_db
def test_thanks_refuses_post(client: Client) -> None:
    assert client.post("/thanks/", {}).status_code == 405


# --- anti-automation --------------------------------------------------------------------------


@pytest.mark.django_db
def test_honeypot_gets_the_thank_you_page_and_stores_nothing(client: Client, caplog) -> None:
    human = client.post("/", {"name": "Ada", "email": "ada@example.com"})
    Customer.objects.all().delete()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="customers"):
        bot = client.post("/", {"name": "Ada", "email": "ada@example.com", "website": "http://spam.example"})
    assert (bot.status_code, bot["Location"], bot.content) == (human.status_code, human["Location"], human.content)
    assert Customer.objects.count() == 0
    assert [r.action for r in caplog.records if hasattr(r, "action")] == ["signup_honeypot"]


@pytest.mark.django_db
def test_eleventh_signup_in_a_minute_gets_a_friendly_429(client: Client, caplog) -> None:
    for number in range(10):
        response = client.post("/", {"name": f"Person {number}", "email": f"p{number}@example.com"})
        assert response.status_code == 302, number
    with caplog.at_level(logging.WARNING, logger="customers"):
        response = client.post("/", {"name": "Eleven", "email": "p11@example.com"})
    assert response.status_code == 429
    assert int(response["Retry-After"]) >= 1
    assert "Please wait a moment" in response.content.decode()
    assert Customer.objects.count() == 10
    assert any(getattr(r, "action", "") == "signup_rate_limited" for r in caplog.records)
    # Another client is not affected, and GET still shows the form.
    assert client.get("/").status_code == 200
    assert client.post("/", {"name": "Other", "email": "o@example.com"}, REMOTE_ADDR="10.9.8.7").status_code == 302


@pytest.mark.django_db
def test_invalid_posts_count_towards_the_limit(client: Client, settings) -> None:
    settings.SIGNUP_RATE_LIMIT = 3
    for _ in range(3):
        assert client.post("/", {"name": "", "email": ""}).status_code == 400
    assert client.post("/", {"name": "Ada", "email": "ada@example.com"}).status_code == 429
    assert Customer.objects.count() == 0


@pytest.mark.django_db
def test_forwarded_for_is_ignored_without_a_trusted_proxy(client: Client, settings) -> None:
    settings.SIGNUP_RATE_LIMIT = 2
    for spoof in ["1.1.1.1", "2.2.2.2"]:
        client.post("/", {"name": "", "email": ""}, HTTP_X_FORWARDED_FOR=spoof)
    assert client.post("/", {"name": "", "email": ""}, HTTP_X_FORWARDED_FOR="3.3.3.3").status_code == 429


@pytest.mark.django_db
def test_behind_a_trusted_proxy_each_forwarded_client_has_its_own_limit(client: Client, settings) -> None:
    import ipaddress

    settings.SIGNUP_RATE_LIMIT = 2
    settings.TRUSTED_PROXY_NETWORKS = [ipaddress.ip_network("127.0.0.0/8")]
    for _ in range(2):
        assert client.post("/", {"name": "", "email": ""}, HTTP_X_FORWARDED_FOR="1.1.1.1").status_code == 400
    assert client.post("/", {"name": "", "email": ""}, HTTP_X_FORWARDED_FOR="1.1.1.1").status_code == 429
    assert client.post("/", {"name": "", "email": ""}, HTTP_X_FORWARDED_FOR="2.2.2.2").status_code == 400


def test_client_ip_reads_forwarded_for_only_from_trusted_proxies(rf, settings) -> None:
    import ipaddress

    settings.TRUSTED_PROXY_NETWORKS = []
    request = rf.post("/", REMOTE_ADDR="10.0.0.5", HTTP_X_FORWARDED_FOR="6.6.6.6")
    assert client_ip(request) == "10.0.0.5"

    settings.TRUSTED_PROXY_NETWORKS = [ipaddress.ip_network("10.0.0.0/24")]
    # The client prepends a forged hop; only the hop our proxy added counts.
    request = rf.post("/", REMOTE_ADDR="10.0.0.5", HTTP_X_FORWARDED_FOR="6.6.6.6, 203.0.113.9")
    assert client_ip(request) == "203.0.113.9"
    # Two trusted proxies in a row are both skipped.
    request = rf.post("/", REMOTE_ADDR="10.0.0.5", HTTP_X_FORWARDED_FOR="203.0.113.9, 10.0.0.7")
    assert client_ip(request) == "203.0.113.9"
    # Garbage stops the walk at the last address we can vouch for.
    request = rf.post("/", REMOTE_ADDR="10.0.0.5", HTTP_X_FORWARDED_FOR="<script>")
    assert client_ip(request) == "10.0.0.5"
    # A peer that is not a trusted proxy can't choose its address.
    request = rf.post("/", REMOTE_ADDR="198.51.100.1", HTTP_X_FORWARDED_FOR="6.6.6.6")
    assert client_ip(request) == "198.51.100.1"


def test_client_ip_behind_a_proxy_on_a_unix_socket(rf, settings) -> None:
    settings.TRUSTED_PROXY_NETWORKS, settings.TRUSTED_PROXY_UNIX = [], False
    request = rf.post("/", REMOTE_ADDR="", HTTP_X_FORWARDED_FOR="203.0.113.9")
    assert client_ip(request) == ""  # nobody vouches for the header: clients can't be told apart
    settings.TRUSTED_PROXY_UNIX = True
    assert client_ip(request) == "203.0.113.9"


@pytest.mark.django_db
def test_rate_limit_window_resets(settings) -> None:
    settings.SIGNUP_RATE_LIMIT = 2
    settings.SIGNUP_RATE_WINDOW = 60
    start = 6000.0
    assert [signup_rate_hit("192.0.2.1", now=start + i).allowed for i in range(3)] == [True, True, False]
    assert signup_rate_hit("192.0.2.1", now=start + 2).retry_after == 58
    assert signup_rate_hit("192.0.2.1", now=start + 60).allowed


@pytest.mark.django_db
def test_an_ipv6_client_is_limited_per_64_not_per_address(client: Client, settings) -> None:
    settings.SIGNUP_RATE_LIMIT = 2
    for host in ["2001:db8:1:2::1", "2001:db8:1:2:ffff::9"]:
        assert client.post("/", {"name": "", "email": ""}, REMOTE_ADDR=host).status_code == 400
    assert client.post("/", {"name": "", "email": ""}, REMOTE_ADDR="2001:db8:1:2:abcd::7").status_code == 429
    # The next /64 is another client.
    assert client.post("/", {"name": "", "email": ""}, REMOTE_ADDR="2001:db8:1:3::1").status_code == 400


@pytest.mark.parametrize(("ip", "network"), [
    ("192.0.2.7", "192.0.2.7"),
    ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
    ("::ffff:192.0.2.7", "192.0.2.7"),
    ("", ""),
])
def test_client_network(ip: str, network: str) -> None:
    assert client_network(ip) == network


# --- escaping in email bodies and logs --------------------------------------------------------


@pytest.mark.django_db
def test_welcome_email_escapes_markup_in_both_bodies_and_the_subject() -> None:
    customer, _ = customer_create(name=f"O'Brien & Sons {SCRIPT}", email="ob@example.com")
    message = welcome_email(customer)
    html = message.alternatives[0][0]
    assert isinstance(html, str)
    assert "<script" not in html and "&lt;script&gt;" in html
    assert "<script" not in message.body and "&lt;script&gt;" in message.body
    assert "O'Brien & Sons" in message.body  # plain text keeps what is not markup as typed
    assert "<script" not in message.subject and message.subject.startswith("Welcome, O'Brien & Sons")
    message.send()
    assert mail.outbox[0].to == ["ob@example.com"]


@pytest.mark.django_db
def test_logs_carry_ids_never_what_was_typed(client: Client, caplog) -> None:
    with caplog.at_level(logging.DEBUG):
        client.post("/", {"name": SCRIPT, "email": "spy@example.com"})
        client.post("/", {"name": "Ada\x1b[2J", "email": "evil\n@example.com"})
    customer = Customer.objects.get()
    text = "\n".join(record.getMessage() for record in caplog.records)
    assert "<script" not in text and "spy@example.com" not in text and "\x1b" not in text
    actions = [getattr(r, "action", None) for r in caplog.records if r.name == "customers.signup"]
    assert actions == ["signup", "signup_invalid"]
    assert [r.customer_id for r in caplog.records if getattr(r, "action", None) == "signup"] == [customer.pk]


# --- property-based ---------------------------------------------------------------------------

HOSTILE_CHARS = st.one_of(
    st.characters(),
    st.characters(categories=["Cs", "Cc", "Cf", "Zl", "Zp", "Co", "Cn"]),
    st.sampled_from(["\x00", "\ufffd", "\ud800", "\udfff", "<", ">", "&", '"', "'", "@", " ", "\t", "\u202e"]),
)
HOSTILE_TEXT = st.one_of(
    st.text(HOSTILE_CHARS, max_size=40),
    st.text(HOSTILE_CHARS, min_size=190, max_size=260),
    st.builds(lambda s, n: s * n, st.text(HOSTILE_CHARS, min_size=1, max_size=3), st.integers(1, 4000)),
)
PROPERTY_SETTINGS = hypothesis_settings(
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def server_sees(value: str) -> str:
    """What Django decodes from our percent-encoded bytes: surrogates arrive as U+FFFD."""
    return value.encode("utf-8", "surrogatepass").decode("utf-8", "replace")


def must_be_refused(name: str, email: str) -> bool:
    """A conservative oracle: input the form can never accept, whatever else it checks."""
    name, email = server_sees(name), server_sees(email)
    return (
        not name.strip() or len(name.strip()) > 200 or bool(text_problem(name))
        or "@" not in email or len(email.strip()) > 254 or bool(text_problem(email))
    )


def post_in_rollback(client: Client, fields: dict[str, str]):
    """POST `fields`, check the outcome inside a transaction, then roll the rows back."""
    with transaction.atomic():
        before = Customer.objects.count()
        response = post_body(client, urlencode_any(fields))
        after = list(Customer.objects.all())
        transaction.set_rollback(True)
    return response, before, after


def assert_outcome(response, before: int, after: list[Customer], name: str, email: str) -> None:
    assert response.status_code < 500
    assert response.status_code in (302, 400), response.status_code
    if response.status_code == 400:
        assert len(after) == before, "invalid input stored a row"
    else:
        assert not must_be_refused(name, email), "refused input was accepted"
        [row] = after
        assert row.name == server_sees(name).strip()
        assert row.email == email_normalize(server_sees(email))
        assert row.email.isascii()


@pytest.mark.django_db
@hypothesis_settings(PROPERTY_SETTINGS, max_examples=450)
@given(name=HOSTILE_TEXT, email=st.one_of(HOSTILE_TEXT, st.emails()))
def test_property_hostile_names_and_emails(client: Client, no_rate_limit, name: str, email: str) -> None:
    response, before, after = post_in_rollback(client, {"name": name, "email": email})
    assert_outcome(response, before, after, name, email)
    if must_be_refused(name, email):
        assert response.status_code == 400


@pytest.mark.django_db
@hypothesis_settings(PROPERTY_SETTINGS, max_examples=300)
@given(name=st.sampled_from(["Ada", "Zoë", "李小龍"]), email=HOSTILE_TEXT.map(lambda s: f"{s}@example.com"))
def test_property_hostile_local_parts(client: Client, no_rate_limit, name: str, email: str) -> None:
    response, before, after = post_in_rollback(client, {"name": name, "email": email})
    assert_outcome(response, before, after, name, email)


LOCAL = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_+-]{0,15}(\.[A-Za-z0-9_+-]{1,8}){0,2}", fullmatch=True)
LABEL = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)
IDN_LABEL = st.text(st.sampled_from("abcdeüéñåøß"), min_size=1, max_size=10)
DOMAIN = st.builds(
    lambda labels, tld: ".".join([*labels, tld]),
    st.lists(st.one_of(LABEL, IDN_LABEL), min_size=1, max_size=3),
    st.sampled_from(["com", "org", "de", "io", "museum"]),
)
FULLWIDTH = {chr(c): chr(c + 0xFEE0) for c in range(0x21, 0x7F)}


def recase(text: str, flips: list[bool]) -> str:
    return "".join(ch.swapcase() if flip else ch for ch, flip in zip(text, flips + [False] * len(text), strict=False))


@pytest.mark.django_db
@hypothesis_settings(PROPERTY_SETTINGS, max_examples=300)
@given(
    name=st.text(st.characters(categories=["L", "M", "N", "P", "S", "Zs"]), min_size=1, max_size=200).filter(
        lambda s: any(c.isalnum() for c in s)
    ),
    local=LOCAL,
    domain=DOMAIN,
    flips=st.lists(st.booleans(), max_size=60),
    fullwidth=st.booleans(),
)
def test_property_valid_signups_store_one_normalised_row(
    client: Client, no_rate_limit, name: str, local: str, domain: str, flips: list[bool], fullwidth: bool
) -> None:
    email = f"{local}@{domain}"
    twin = recase(email, flips)
    if fullwidth:
        twin = "".join(FULLWIDTH.get(ch, ch) for ch in twin)
    with transaction.atomic():
        first = post_body(client, urlencode_any({"name": name, "email": email}))
        second = post_body(client, urlencode_any({"name": "Twin", "email": twin}))
        rows = list(Customer.objects.annotate(folded=Lower("email")).values_list("name", "email", "folded"))
        transaction.set_rollback(True)
    assert (first.status_code, second.status_code) == (302, 302), (first.content[:2000], second.content[:2000])
    assert first.content == second.content
    expected = email_normalize(email)
    assert rows == [(name.strip(), expected, expected.lower())]
    assert expected.isascii()
