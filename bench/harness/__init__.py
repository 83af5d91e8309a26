"""What every benchmark stands on: the servers, the SMTP sink, the Django-side driver, /proc readers, settings."""
