"""What the database says about every instance on every host: heartbeats, history, pauses, wake-ups.

Nothing here imports `daemons.console` (tests/daemons/test_layout.py).
"""
