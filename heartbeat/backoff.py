"""Pure delay maths: retry backoff, the idle-safety cap, Retry-After, next due time.

No clock, no randomness of its own: callers pass ``now`` and a uniform random number
``u`` in [0, 1), so every function here is deterministic and tested alone.
"""

from __future__ import annotations

import email.utils
import math

#: A retry never waits less than this, so a tight idle budget cannot become a busy loop.
MIN_RETRY_DELAY = 0.1

#: Attempts a failing job always gets between its last success and the idle threshold.
ATTEMPTS_BEFORE_IDLE = 3


def backoff_ceiling(attempt: int, *, initial: float, multiplier: float, maximum: float) -> float:
    """The upper bound of the ``attempt``-th retry delay (1-based), before jitter."""
    exponent = max(attempt - 1, 0)
    # Guard against overflow for absurd attempt counts.
    if multiplier > 1 and exponent > math.log(maximum / initial + 1, multiplier) + 1:
        return maximum
    return min(maximum, initial * multiplier**exponent)


def full_jitter(ceiling: float, u: float) -> float:
    """AWS "full jitter": uniform in [0, ceiling)."""
    return ceiling * u


def idle_cap(*, now: float, last_success: float, idle_after: float) -> float | None:
    """The longest a retry may wait so that ``ATTEMPTS_BEFORE_IDLE`` more attempts
    still fit before ``idle_after`` has passed since the last success.

    None once ``idle_after`` has passed: the server has had its chance to fail the
    job by then, and hurrying would only hammer a cluster that is already in trouble.
    """
    remaining = last_success + idle_after - now
    if remaining <= 0:
        return None
    return max(remaining / ATTEMPTS_BEFORE_IDLE, MIN_RETRY_DELAY)


def retry_delay(
    attempt: int,
    *,
    u: float,
    initial: float,
    multiplier: float,
    maximum: float,
    retry_after: float | None = None,
    cap: float | None = None,
) -> float:
    """Delay before retry number ``attempt`` (1-based).

    Full jitter over the exponential ceiling; then at least the server's Retry-After;
    then at most ``cap`` (the idle-safety cap), which wins over Retry-After: a job
    that goes idle is lost work, a retry that comes early is only one more request.
    """
    delay = full_jitter(
        backoff_ceiling(attempt, initial=initial, multiplier=multiplier, maximum=maximum), u
    )
    if retry_after is not None:
        delay = max(delay, min(retry_after, maximum))
    if cap is not None:
        delay = min(delay, cap)
    return max(delay, MIN_RETRY_DELAY)


def parse_retry_after(value: str | None, *, now_wall: float) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date.

    Anything unparseable, negative or in the past gives None (no advice).
    """
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    if value.isdigit():
        return float(int(value))
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    seconds = when.timestamp() - now_wall
    return seconds if seconds > 0 else None


def next_due(
    anchor: float, *, now: float, interval: float, jitter: float, u: float
) -> tuple[float, float]:
    """After a success at ``now`` for a job whose nominal due time was ``anchor``:
    return ``(new_anchor, due)``.

    The nominal schedule advances by exactly ``interval`` from the previous nominal
    due time, so request latency does not make the schedule drift; jitter is applied
    around the nominal time and does not accumulate. If the job is more than one
    interval behind (after retries or an outage), the schedule restarts from ``now``.
    """
    new_anchor = anchor + interval
    if new_anchor <= now:
        new_anchor = now + interval
    offset = interval * jitter * (2.0 * u - 1.0)
    return new_anchor, max(new_anchor + offset, now)
