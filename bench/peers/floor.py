"""The floor: the same onboarding with nothing but the stdlib, over one SMTP connection (or several).

    python -m bench.peers.floor DB_PATH SMTP_PORT [CONNECTIONS]

Sends every waiting customer of the SQLite file a welcome email (text and HTML, the
showcase's wording) and records it, one commit per customer as ours does, then prints
"drained" and waits to be terminated, so its memory can be read after the work. With
CONNECTIONS (default 1) threads, each with its own SMTP and SQLite connection, share the
customers by id, so the waits for the mail server overlap as ours do with
ONBOARDING_SEND_CONCURRENCY.
"""
from __future__ import annotations

import datetime
import html
import os
import signal
import smtplib
import sqlite3
import sys
import threading
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText

TEXT = "Hello {name},\n\nWelcome aboard. Your account for {email} is ready.\n\nSee you soon!\n"
SENDER = "Signup Site <welcome@localhost>"
HTML = ("<!doctype html>\n<html lang=\"en\">\n<head><meta charset=\"utf-8\"><title>Welcome</title></head>\n<body>\n"
        "<p>Hello {name},</p>\n<p>Welcome aboard. Your account for {email} is ready.</p>\n<p>See you soon!</p>\n"
        "</body>\n</html>\n")


def main() -> None:
    db_path, port = sys.argv[1], int(sys.argv[2])
    connections = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    threads = [threading.Thread(target=drain, args=(db_path, port, connections, share)) for share in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    print("drained", flush=True)
    signal.sigwait({signal.SIGTERM, signal.SIGINT})


def drain(db_path: str, port: int, shares: int, share: int) -> None:
    """Onboard the waiting customers whose id is `share` modulo `shares`."""
    db = sqlite3.connect(db_path, timeout=20, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    smtp = smtplib.SMTP("127.0.0.1", port)
    while True:
        batch = db.execute("SELECT id, name, email, created_at FROM customers_customer WHERE onboarded_at IS NULL "
                           "AND id % ? = ? ORDER BY created_at, id LIMIT 50", (shares, share)).fetchall()
        if not batch:
            break
        for pk, name, email, _created_at in batch:
            # The compat32 MIME classes, as Django uses: the stdlib's newer EmailMessage is
            # several times slower to build and would flatter everyone measured against it.
            message = MIMEMultipart("alternative")
            message["Subject"] = f"Welcome, {name}"
            message["From"] = SENDER
            message["To"] = email
            message["Message-ID"] = f"<welcome-{pk}@localhost>"
            message.attach(MIMEText(TEXT.format(name=name, email=email), "plain", "utf-8"))
            message.attach(MIMEText(HTML.format(name=html.escape(name), email=html.escape(email)), "html", "utf-8"))
            smtp.sendmail(SENDER, [email], message.as_bytes())
            now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
            db.execute("BEGIN IMMEDIATE")
            db.execute("INSERT INTO customers_onboarding (customer_id, onboarded_at, message_id, onboarded_by) "
                       "VALUES (?, ?, ?, ?)", (pk, now, message["Message-ID"], f"floor/{os.getpid()}"))
            db.execute("UPDATE customers_customer SET onboarded_at = ? WHERE id = ?", (now, pk))
            db.execute("COMMIT")
    smtp.quit()
    db.close()


if __name__ == "__main__":
    main()
