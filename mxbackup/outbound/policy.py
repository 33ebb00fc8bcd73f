"""Retry rules and the classification of delivery results.

Pure: no reactor.  The seed's rule is a fixed interval: ``retries`` retries after the first
try, ``minutes_between_retries`` apart.  Optional: a backoff factor (capped), and a maximum
queue lifetime after which the message is returned whatever the retry count (Postfix-like).
"""

from __future__ import annotations

from dataclasses import dataclass

from mxbackup.config import Route

# Rules for recipients without a route (bounces to senders, authenticated relay): like
# Postfix's defaults, retried every 15 minutes for at most 5 days.
DEFAULT_RETRIES = 480
DEFAULT_MINUTES = 15
DEFAULT_LIFETIME = 5 * 24 * 3600.0


@dataclass(frozen=True)
class RetryRule:
    retries: int = DEFAULT_RETRIES
    minutes_between_retries: float = DEFAULT_MINUTES
    backoff: float = 1.0
    max_minutes_between_retries: float = 240
    max_queue_lifetime: float = DEFAULT_LIFETIME  # 0 = no limit

    @classmethod
    def for_route(cls, route: Route | None) -> RetryRule:
        if route is None:
            return cls()
        return cls(
            retries=route.retries,
            minutes_between_retries=route.minutes_between_retries,
            backoff=route.backoff,
            max_minutes_between_retries=max(
                route.max_minutes_between_retries, route.minutes_between_retries
            ),
            max_queue_lifetime=route.max_queue_lifetime,
        )

    def interval(self, attempts: int) -> float:
        """Seconds to wait after the ``attempts``-th try (1 = after the first try)."""
        minutes = self.minutes_between_retries * self.backoff ** max(attempts - 1, 0)
        if self.backoff > 1:
            minutes = min(minutes, self.max_minutes_between_retries)
        return minutes * 60.0

    def next_attempt(self, attempts: int, received_at: float, now: float) -> float | None:
        """When to try again after ``attempts`` failed tries, or None: give up now."""
        if attempts > self.retries:
            return None
        when = now + self.interval(attempts)
        if self.max_queue_lifetime:
            expires = received_at + self.max_queue_lifetime
            if now >= expires:
                return None
            when = min(when, expires)
        return when
