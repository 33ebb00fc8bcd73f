"""Why mail waits for a target: the reason of its last failed attempt or probe, shown where
operators look (``mxbackup queue list``, the status view, the log, the metrics).

Pure: no reactor, times are passed in.  Each failure is counted by its kind (``kind_of``: the
metrics' ``reason`` label); a reason is worth a log line when it differs from the last one
logged for the target, or when ``LOG_AGAIN`` seconds have passed since (a target that fails
the same way for days costs a line every few minutes, not one per probe).
"""

from __future__ import annotations

from collections import Counter

LOG_AGAIN = 300.0  # seconds: a reason that persists is logged again this often

# (kind, words in the reason that say it), first match wins; the reasons are ours
# (``wire.session.describe``, ``outbound.dialer``), so the words are known
_KINDS = (
    ("loop", ("loops back to myself",)),
    ("dns", ("dns lookup", "dns failure")),
    ("tls_certificate", ("certificate verification failed", "certificate verify failed")),
    ("tls_hostname", ("not valid for the target's name",)),
    ("tls", ("starttls", "tls ")),
    ("auth", ("auth:",)),
    ("refused", ("refused",)),
    ("timeout", ("timed out",)),
    ("no_address", ("no address",)),
)


def kind_of(reason: str) -> str:
    """The reason's kind, a short label: loop, dns, tls_certificate, tls_hostname, tls, auth,
    refused, timeout, no_address, reply (an SMTP reply otherwise) or other."""
    text = reason.lower()
    for kind, words in _KINDS:
        if any(word in text for word in words):
            return kind
    if any(f": {c}" in text for c in "45"):  # "greeting: 421 ...", "mail: 452 ..."
        return "reply"
    return "other"


class Reasons:
    """Failures counted by (target, kind), and the log lines' pacing per target."""

    def __init__(self, log_again: float = LOG_AGAIN) -> None:
        self.log_again = log_again
        self.failures: Counter[tuple[str, str]] = Counter()
        self._logged: dict[str, tuple[str, float]] = {}

    def failed(self, key: str, reason: str, now: float) -> bool:
        """A failure of ``key`` for ``reason``; True when it is worth a log line."""
        self.failures[(key, kind_of(reason))] += 1
        last = self._logged.get(key)
        if last is not None and last[0] == reason and now < last[1] + self.log_again:
            return False
        self._logged[key] = (reason, now)
        return True

    def cleared(self, key: str) -> None:
        """The target works again: its next failure is news, whatever it is."""
        self._logged.pop(key, None)


def with_address(remote: str, error: str) -> str:
    """A failure's reason with the address it happened at (a session's errors name the
    step only: "auth: 535 ..."), unless it names it already."""
    if not remote or not error or remote in error:
        return error
    return f"{remote}: {error}"
