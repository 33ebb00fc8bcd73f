"""The delivery contract: what the scheduler hands the SMTP client, and what it gets back.

Pure types, no reactor.  The client (``mxbackup.wire.client``) takes immutable ``Job``s and
returns a ``Delivery``: one Deferred per job, firing with that job's ``JobResult`` (exactly one
``Outcome`` per recipient) as soon as its transaction has ended, and ``done``, firing with the
session's ``Attempt`` after all of them.  It never mutates what it was given and never calls
back into its caller; it knows no spool beyond the file each job names.

Before its first MAIL the client waits on ``ready()``, a condition the caller may set (a
durability barrier: state it must have on disk first); connecting and EHLO go on meanwhile.
If ``ready()`` fails, no job is sent: each gets a ``tempfail`` with ``tried=False``.  The
scheduler passes ``dialer.no_wait``: its tries are noted in the try log before it dials
(``queue.tries``), nothing is written before a delivery.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from twisted.internet.defer import Deferred

from mxbackup.config import Route

Kind = Literal["delivered", "tempfail", "permfail"]


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
    # The target offered DSN and was given NOTIFY/ORCPT: a success notice is its to send.
    notify_passed: bool = False
    # True: the reply is the target's answer to this recipient's RCPT (it refused the
    # recipient itself, not the message): what recipient verification learns from.
    at_rcpt: bool = False

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


@dataclass(frozen=True)
class Candidate:
    """One address to connect to, in the order the next hop chose."""

    name: str  # the host name (certificate checks use it)
    ip: str
    port: int


@dataclass(frozen=True)
class Settings:
    """What one connection needs to know about the route and the delivery section."""

    helo_name: str
    security: str = "none"  # none | ssl | starttls | starttls_required
    verify_certificate: bool = True
    ca_file: str | None = None
    username: str | None = None
    password: str | None = None
    allow_plaintext_auth: bool = False
    connect_timeout: float = 30.0
    reply_timeout: float = 300.0
    source_address: str = ""  # delivery.source_address: "" = the system's choice

    @classmethod
    def for_route(cls, route: Route | None, helo_name: str, **kw: Any) -> Settings:
        if route is None:  # MX delivery: opportunistic TLS, nothing verified (like Postfix "may")
            return cls(helo_name, security="starttls", verify_certificate=False, **kw)
        auth = route.authentication
        return cls(
            helo_name,
            security=route.security,
            verify_certificate=route.verify_certificate,
            ca_file=route.ca_file,
            username=auth.username if auth else None,
            password=auth.password if auth else None,
            allow_plaintext_auth=bool(auth and auth.allow_plaintext),
            **kw,
        )


def bind_address(source: str, ip: str) -> tuple[str, int] | None:
    """The ``bindAddress`` to connect to ``ip`` from ``source``: only when both are of the
    same family (an IPv4 source cannot reach an IPv6 target: that one goes from the system's
    choice); None for the system's choice."""
    if not source or (":" in source) != (":" in ip):
        return None
    return (source, 0)


@dataclass(frozen=True)
class Job:
    """One message for one target: all its pending recipients there."""

    qid: str
    sender: str  # "" for <>
    recipients: tuple[str, ...]
    path: str  # the stored message, canonical CRLF, sent as is
    size: int
    eight_bit: bool = False  # BODY=8BITMIME was declared
    # What the sender asked of the mail system (RFC 6531, RFC 3461), passed on to a target
    # that offers the extension (``wire.transaction``), else honoured by us.
    smtputf8: bool = False
    ret: str | None = None  # "FULL" | "HDRS"
    envid: str | None = None  # xtext, as received
    notify: tuple[str | None, ...] = ()  # per recipient (same order), canonical, or None
    orcpt: tuple[str | None, ...] = ()  # per recipient: "addr-type;xtext" as received, or None
    # 8-bit mail to a target without 8BITMIME: converted to 7 bit (True) or refused with
    # 5.6.3 (the route's allow_8bit_conversion).
    convert_8bit: bool = True

    def rcpt_params(self, i: int) -> tuple[str | None, str | None]:
        """NOTIFY and ORCPT of ``recipients[i]``."""
        notify = self.notify[i] if i < len(self.notify) else None
        orcpt = self.orcpt[i] if i < len(self.orcpt) else None
        return notify, orcpt


@dataclass(frozen=True)
class JobResult:
    job: Job
    outcomes: Mapping[str, Outcome]  # exactly one per recipient of ``job``
    # True: not the end of the job's transaction, but the session's (the jobs it could not
    # send, a failed ``ready``, no candidate, a local error): the caller may keep it until
    # ``done`` and record it after the session's ``Attempt``.
    at_end: bool = False


@dataclass(frozen=True)
class Attempt:
    """How the session went: whether a target talked SMTP with us (so it is up)."""

    connected: bool
    remote: str
    error: str = ""
    tls_failed: bool = False  # STARTTLS or its handshake failed before any transaction
    # The session ended before all its jobs were done (connection reset or closed, timeout,
    # 421), or a probe did not end cleanly: the target is in trouble even if it took mail.
    broken: bool = False
    # The client failed locally (an unreadable ca_file, a bug), not the target: its jobs'
    # results (tempfail, "local: ...", not tried, ``at_end``) say nothing about the target.
    local_error: bool = False


@dataclass(frozen=True)
class Delivery:
    """What ``deliver`` returns at once.  ``results[i]`` belongs to ``jobs[i]``; each fires
    exactly once and never fails; ``done`` fires after all of them."""

    results: tuple[Deferred[JobResult], ...]
    done: Deferred[Attempt]


# The durability barrier.  The client calls it at most once per ``deliver`` call, when its
# first session is about to send its first MAIL (after connect, EHLO, STARTTLS, AUTH); never
# for a probe (no jobs) nor when no session gets that far.  So the writes it waits for should
# already be under way when ``deliver`` is called (it may also start them; they then do not
# overlap with connecting).  A failure, or an exception raised by the call, tempfails every
# job with ``tried=False`` and the reason: ``local: <str(exception)>``.
Ready = Callable[[], Deferred[None]]


class Deliver(Protocol):
    """The client's signature, as the scheduler sees it (the reactor is bound in already)."""

    def __call__(
        self, candidates: Sequence[Candidate], settings: Settings, jobs: Sequence[Job], ready: Ready
    ) -> Delivery: ...
