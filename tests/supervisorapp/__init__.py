"""A daemon app for the supervisor's tests, installed only by `tests.supervisorapp.settings`."""
