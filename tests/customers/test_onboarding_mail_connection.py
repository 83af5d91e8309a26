"""The onboarding daemon's SMTP connection: one session kept across ticks, closed when idle, failed or stopping."""
from __future__ import annotations

import select
import smtplib
import time
from dataclasses import dataclass

import pytest

from customers import onboarding
from customers.daemons import OnboardingDaemon
from customers.models import Customer, Onboarding
from tests.conftest import wait_for
from tests.customers.conftest import SinkHandler, SmtpSink, customers_seed
from tests.customers.test_onboarding import ready_daemon


@dataclass
class SessionCountingHandler(SinkHandler):
    """The sink's handler, also counting SMTP sessions: smtplib greets each new connection with one EHLO."""

    sessions: int = 0
    noops: int = 0
    idle_timed_out: bool = False  # the next MAIL is answered as a session the server timed out

    async def handle_EHLO(self, server, session, envelope, hostname, responses):  # aiosmtpd calls it by this name
        with self.lock:
            self.sessions += 1
        session.host_name = hostname
        return responses

    async def handle_NOOP(self, server, session, envelope, arg):  # aiosmtpd calls it by this name
        with self.lock:
            self.noops += 1
        return "250 OK"

    async def handle_MAIL(self, server, session, envelope, address, mail_options):  # aiosmtpd calls it by this name
        with self.lock:
            timed_out, self.idle_timed_out = self.idle_timed_out, False
        if timed_out:  # what a server that timed the idle session out answers (Postfix: then it hangs up)
            return "421 4.4.2 Error: timeout exceeded"
        return await super().handle_MAIL(server, session, envelope, address, mail_options)


def counting_sink_start(settings, idle_timeout: float = 300) -> SmtpSink:
    sink = SmtpSink(SessionCountingHandler(), idle_timeout=idle_timeout)
    sink.start()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST = "127.0.0.1"
    settings.EMAIL_PORT = sink.port
    settings.ONBOARDING_SEND_CONCURRENCY = 1  # one lane: the sessions counted are that lane's
    return sink


@pytest.fixture
def counting_sink(settings):
    sink = counting_sink_start(settings)
    try:
        yield sink
    finally:
        sink.close()


def sessions(sink: SmtpSink) -> int:
    with sink.handler.lock:
        return sink.handler.sessions  # type: ignore[attr-defined]


def test_one_session_serves_tick_after_tick(db, fixed_now, counting_sink) -> None:
    daemon = ready_daemon()
    for i in range(3):
        customers_seed(2, prefix=f"t{i}-")
        daemon.tick(fixed_now)
    assert counting_sink.count() == 6 and Onboarding.objects.count() == 6
    assert sessions(counting_sink) == 1
    with counting_sink.handler.lock:  # a kept session is trusted without a round trip to ask first
        assert counting_sink.handler.noops == 0
    daemon.teardown()
    assert daemon.lanes[0].mail is None


def daemon_after_one_send(now) -> OnboardingDaemon:
    """A ready daemon that has onboarded one customer, and so holds an SMTP session."""
    daemon = ready_daemon()
    customers_seed(1, prefix="first")
    daemon.tick(now)
    return daemon


def test_the_session_is_closed_after_the_idle_period_and_reopened_by_the_next_send(
    db, fixed_now, counting_sink
) -> None:
    daemon = daemon_after_one_send(fixed_now)
    [lane] = daemon.lanes
    assert lane.mail is not None and lane.mail.connection is not None  # type: ignore[attr-defined]
    daemon.tick(fixed_now)  # idle, within the keep-alive: kept
    assert lane.mail is not None
    lane.used_at -= daemon.mail_keep_alive  # as if the keep-alive had passed without mail
    daemon.tick(fixed_now)  # idle, past it: closed without any mail to send
    assert lane.mail is None
    customers_seed(1, prefix="second")
    daemon.tick(fixed_now)
    assert counting_sink.count() == 2 and sessions(counting_sink) == 2
    daemon.teardown()


def session_kill(sink: SmtpSink, session: smtplib.SMTP, how: str) -> None:
    """End the kept `session` on the server's side, as `how` says."""
    if how == "restart":  # the server went away and came back
        sink.stop()
        sink.start()
    elif how == "idle timeout":  # the server hung up on an idle client
        sock = session.sock
        assert sock is not None
        wait_for(lambda: select.select([sock], [], [], 0)[0], timeout=10, message="the server's hang-up")
    else:  # the server answers the next command with its idle-timeout 421, as Postfix does before hanging up
        sink.handler.idle_timed_out = True  # type: ignore[attr-defined]


@pytest.mark.parametrize("how", ["restart", "idle timeout", "421"])
def test_a_session_the_server_ended_between_ticks_is_replaced_without_an_outage(db, fixed_now, settings, how) -> None:
    sink = counting_sink_start(settings, idle_timeout=0.5 if how == "idle timeout" else 300)
    try:
        daemon = daemon_after_one_send(fixed_now)
        session_kill(sink, daemon.lanes[0].mail.connection, how)  # type: ignore[union-attr]
        customers_seed(1, prefix="second")
        result = daemon.tick(fixed_now)
        assert result.summary == "onboarded 1 customer"
        assert daemon.mail_failures == 0
        assert sink.count() == 2 and sessions(sink) == 2
        daemon.teardown()
    finally:
        sink.close()


def test_a_failed_send_closes_the_session_and_the_next_one_opens_another(db, fixed_now, counting_sink) -> None:
    customers_seed(3, prefix="c")
    counting_sink.handler.reject["c1@example.com"] = ("451 4.3.0 try again later", 1)
    daemon = ready_daemon()
    result = daemon.tick(fixed_now)
    assert result.summary == "onboarded 2 customers, 1 failed"
    assert sessions(counting_sink) == 2
    daemon.teardown()


def test_the_last_message_s_reply_deadline_does_not_stretch_the_next_send_on_the_kept_session(
    db, fixed_now, counting_sink
) -> None:
    daemon = daemon_after_one_send(fixed_now)
    mail = daemon.lanes[0].mail
    assert mail is not None
    # The moment between arming the next send and its sendmail(): the watch must already count from this arm.
    watch = onboarding.send_watch_arm(mail, 0.3)
    wait_for(lambda: watch.expired, timeout=5, message="the deadline of a send on the kept session")
    watch.disarm()
    daemon.teardown()


def test_one_deadline_thread_serves_every_send_and_still_ends_a_slow_one(
    db, fixed_now, settings, counting_sink
) -> None:
    settings.ONBOARDING_SMTP_TIMEOUT_SECONDS = 1.2
    customers_seed(4, prefix="d")
    daemon = ready_daemon()
    daemon.tick(fixed_now)  # four quick sends
    mail = daemon.lanes[0].mail
    assert mail is not None
    watch = onboarding.send_watch_arm(mail, 10)  # this thread's watch, as the sends left it
    watch.disarm()
    assert not watch.ended
    # The same watch, reused, still ends a send whose replies each come within the read timeout.
    counting_sink.handler.mail_delay = counting_sink.handler.rcpt_delay = 1.0
    began = time.monotonic()
    with pytest.raises(onboarding.SendDeadlineExceeded):
        onboarding.message_send(onboarding.welcome_email(Customer.objects.get(email="d0@example.com")), mail,
                                deadline=1.5)
    # Never before the deadline; after it, by no more than a loaded machine's delay. Without the deadline the
    # send would have succeeded at about 2 s, each reply within the read timeout.
    assert 1.5 <= time.monotonic() - began < 3.0
    assert onboarding.send_watch_arm(mail, 10) is watch
    watch.disarm()
    daemon.teardown()
