"""Retry rules and the classification of delivery results.

Pure: no reactor.  The seed's rule is a fixed interval: ``retries`` retries after the first
try, ``minutes_between_retries`` apart.  Optional: a backoff factor (capped), and a maximum
queue lifetime after which the message is returned whatever the retry count (Postfix-like).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .config import Route

Kind = Literal["delivered", "tempfail", "permfail"]

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

    def expired(self, received_at: float, now: float) -> bool:
        return bool(self.max_queue_lifetime) and now >= received_at + self.max_queue_lifetime


@dataclass(frozen=True)
class Outcome:
    """What one delivery attempt did for one recipient."""

    kind: Kind
    code: int  # the SMTP reply code, or 0 when there was no reply (connection, timeout)
    text: str  # the reply text (with its enhanced status), or what went wrong locally
    remote: str = ""  # the target that answered
    # False: the session ended before this message's transaction began (a broken connection,
    # a 421): nothing was tried, so the try does not count against the route's retries.
    tried: bool = True

    @property
    def reply(self) -> str:
        return f"{self.code} {self.text}" if self.code else self.text

    def status(self) -> str:
        """An RFC 3463 status for the DSN: from the reply's enhanced code when it has one."""
        head = self.text.split(" ", 1)[0]
        parts = head.split(".")
        if len(parts) == 3 and all(p.isdigit() for p in parts) and head[0] in "245":
            return head
        if self.kind == "permfail":
            return "5.0.0"
        return "4.0.0" if self.kind == "tempfail" else "2.0.0"


def classify(code: int) -> Kind:
    if 200 <= code < 300:
        return "delivered"
    if 500 <= code < 600:
        return "permfail"
    return "tempfail"  # 4xx, no reply, anything odd
