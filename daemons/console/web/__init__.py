"""The dashboard and the HTTP endpoints (health, metrics, wake-ups), with the chart they draw."""
