"""The one backoff rule: a delay that doubles per consecutive failure, up to a cap."""
from __future__ import annotations


def backoff(failures: int, *, base: float, cap: float) -> float:
    """The delay after the `failures`-th consecutive failure (1, 2, ...): `base` doubled each time, at most `cap`."""
    # The exponent stops growing long past any cap, so a long run of failures can't overflow a float.
    return min(cap, base * 2.0 ** min(max(0, failures - 1), 64))
