"""One OS process, from taking its PID lock to releasing it: the life cycle, the tick loop, the supervisor.

Nothing here imports `daemons.console` or Django's management machinery (tests/daemons/test_layout.py).
"""
