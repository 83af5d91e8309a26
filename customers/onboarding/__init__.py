"""Onboarding customers, exactly once: claim them, send each the welcome email, record it or its failure.

Each module has one job; read them in this order:

- `owner`: who holds a claim (one process of one daemon instance), and the daemon's name;
- `claims`: taking claims, their leases, keeping them through a long send, and giving them back;
- `welcome`: the welcome email and its Message-ID;
- `mail`: sending one message over SMTP within a deadline, telling an unanswered end of DATA apart;
- `failures`: whose fault a failed send is (the customer's or the mail server's), and how to say it safely;
- `retry`: when to try a customer, or the mail server, again;
- `records`: recording an onboarding or a failed attempt, only while the claim is ours;
- `breaker`: telling a server that refuses everyone from customers with bad addresses;
- `onboard`: one customer, end to end: send, then record what came of it;
- `requeue`: the admin's retry of failed customers.

The names below are the package's public API (`from customers import onboarding; onboarding.X`). To replace one
in a test, patch the module that looks it up, not this package.
"""
from __future__ import annotations

from .breaker import Breaker
from .claims import (
    ClaimKeeper,
    claims_confirm,
    claims_release,
    claims_release_predecessors,
    claims_renew,
    customers_claim,
    lease_duration,
    lease_end,
)
from .failures import MailServerUnavailable, error_describe, is_mail_outage, is_permanent, is_policy_refusal
from .mail import (
    DJANGO_SMTP_BACKEND,
    PLAIN_ADDRESS,
    SEND_WATCH_IDLE_SECONDS,
    FinalReplySMTP,
    FinalReplySMTP_SSL,
    SendDeadlineExceeded,
    SendOutcomeUnknown,
    SendWatch,
    SmtpBackend,
    mail_close,
    mail_connection,
    message_send,
    send_watch_arm,
)
from .onboard import customer_onboard, send_record, welcome_send
from .owner import DAEMON_NAME, Owner, boot_id, instance_lock_key, onboarding_wake, process_marker
from .records import (
    OnboardResult,
    Outcome,
    completion_statements,
    customer_onboarding_complete,
    customer_onboarding_failed,
)
from .requeue import BEING_ONBOARDED, RETRY_SKIP_REASONS, RetryReport, customers_retry_onboarding
from .retry import MAIL_OUTAGE_BACKOFF_CAP, mail_outage_delay, retry_delay
from .welcome import QUICK_FOLD, QuickFoldPolicy, WelcomeEmail, welcome_email, welcome_message_id, welcome_templates

__all__ = [
    "BEING_ONBOARDED", "Breaker", "ClaimKeeper", "DAEMON_NAME", "DJANGO_SMTP_BACKEND", "FinalReplySMTP",
    "FinalReplySMTP_SSL", "MAIL_OUTAGE_BACKOFF_CAP", "MailServerUnavailable", "OnboardResult", "Outcome", "Owner",
    "PLAIN_ADDRESS", "QUICK_FOLD", "QuickFoldPolicy", "RETRY_SKIP_REASONS", "RetryReport", "SEND_WATCH_IDLE_SECONDS",
    "SendDeadlineExceeded", "SendOutcomeUnknown", "SendWatch", "SmtpBackend", "WelcomeEmail", "boot_id",
    "claims_confirm", "claims_release", "claims_release_predecessors", "claims_renew", "completion_statements",
    "customer_onboard", "customer_onboarding_complete", "customer_onboarding_failed", "customers_claim",
    "customers_retry_onboarding", "error_describe", "instance_lock_key", "is_mail_outage",
    "is_permanent", "is_policy_refusal", "lease_duration", "lease_end", "mail_close", "mail_connection",
    "mail_outage_delay", "message_send", "onboarding_wake", "process_marker", "retry_delay", "send_record",
    "send_watch_arm", "welcome_email", "welcome_message_id", "welcome_send", "welcome_templates",
]
