"""One DNS question through the injected resolver (``check_wiring.make_resolver``: it honours
``delivery.dns_servers``; never the system resolver), with the checks' timeout, answered as
plain data.

Pure: no reactor of its own (the resolver carries the injected one).  "No such name" and "no
records of that type" are both an empty answer (for DNSBL and SPF alike they mean "nothing
here"); a timeout or any other failure is ``DNSTrouble``.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.names import dns, error
from twisted.python.failure import Failure

NEGATIVE_TTL = 300  # seconds "nothing here" is remembered when the answer says no TTL
_NO_SUCH_NAME = (error.DNSNameError, error.DomainError, error.AuthoritativeDomainError)


class DNSTrouble(Exception):
    """No usable answer: timeout, SERVFAIL, refused, malformed."""

    def __init__(self, name: str, qtype: str, reason: str) -> None:
        super().__init__(f"{qtype} {name}: {reason}")
        self.name, self.qtype, self.reason = name, qtype, reason


@dataclass(frozen=True, slots=True)
class Record:
    name: str  # lower case, no trailing dot
    qtype: str  # "A", "AAAA", "TXT", "MX", "PTR", "CNAME"
    value: Any  # A/AAAA: address text; TXT: tuple of bytes; MX: (pref, host); PTR/CNAME: host
    ttl: int


@dataclass(frozen=True, slots=True)
class Answer:
    records: tuple[Record, ...]
    ttl: int  # the smallest TTL of the answer, or NEGATIVE_TTL when it is empty

    def values(self, qtype: str) -> list[Any]:
        return [r.value for r in self.records if r.qtype == qtype]


TYPES = {"A": dns.A, "AAAA": dns.AAAA, "TXT": dns.TXT, "MX": dns.MX, "PTR": dns.PTR}
_NAMES = {dns.A: "A", dns.AAAA: "AAAA", dns.TXT: "TXT", dns.MX: "MX", dns.PTR: "PTR"}
_NAMES[dns.CNAME] = "CNAME"
_NAMES[dns.SPF] = "TXT"  # never asked; harmless if a server adds it


def _value(payload: Any, qtype: str) -> Any:
    if qtype in ("A", "AAAA"):
        return payload.dottedQuad() if qtype == "A" else _ipv6(payload.address)
    if qtype == "TXT":
        return tuple(payload.data)
    if qtype == "MX":
        return (payload.preference, payload.name.name.decode("ascii", "replace").lower())
    return payload.name.name.decode("ascii", "replace").lower()


def _ipv6(packed: bytes) -> str:
    return str(ipaddress.IPv6Address(packed))


def _answer(result: tuple[list[Any], list[Any], list[Any]]) -> Answer:
    records = []
    for rr in result[0]:
        qtype = _NAMES.get(rr.type)
        if qtype is None:
            continue
        name = rr.name.name.decode("ascii", "replace").lower().rstrip(".")
        records.append(Record(name, qtype, _value(rr.payload, qtype), rr.ttl))
    ttl = min((r.ttl for r in records), default=NEGATIVE_TTL)
    return Answer(tuple(records), ttl)


def lookup(resolver: Any, name: str, qtype: str, timeout: float) -> Deferred[Answer]:
    """Ask ``resolver`` once for ``name``/``qtype``; fails only with ``DNSTrouble``."""

    def failed(failure: Failure) -> Answer:
        if failure.type in _NO_SUCH_NAME:  # exactly: the other errors are subclasses
            return Answer((), NEGATIVE_TTL)
        raise DNSTrouble(name, qtype, failure.getErrorMessage() or failure.type.__name__)

    query = dns.Query(name.encode("ascii", "replace"), TYPES[qtype], dns.IN)
    try:
        d = resolver.query(query, timeout=(max(timeout, 0.001),))
    except Exception as e:  # noqa: BLE001 - a resolver that raises is DNS trouble too
        return defer.fail(DNSTrouble(name, qtype, str(e)))
    return d.addCallbacks(_answer, failed)
