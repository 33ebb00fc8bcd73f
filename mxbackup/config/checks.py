"""The ``checks:`` section (inbound filtering) and its value readers.

Absent, every check is off.  What each key means is in ``etc/mx.yaml`` and the operators'
contract (``shared/config.md``): DNSBL zones, SPF, DKIM, Authentication-Results, ARC sealing
and greylisting.
"""

from __future__ import annotations

from dataclasses import dataclass

import mxbackup.config.values as v
from mxbackup.config.reader import Items, Reader, setting, show
from mxbackup.config.scalars import boolean, choice, readable_file, seconds
from mxbackup.config.values import IPNetwork


@dataclass(frozen=True)
class DNSBLZone:
    zone: str = setting("the list's DNS zone, e.g. zen.spamhaus.org", v.host_name)
    match: tuple[IPNetwork, ...] = setting(
        "answers that list the client; [] = any A record in 127.0.0.0/8",
        Items(v.network, "a list of addresses or networks"),
        default=(),
        null=True,
    )


@dataclass(frozen=True)
class ARCConfig:
    domain: str = setting("the signing domain (d=)", v.host_name)
    selector: str = setting("the DNS selector (s=)", v.host_name)
    private_key: str = setting("PEM RSA private key, 1024 bits or more", readable_file)


@dataclass(frozen=True)
class GreylistingConfig:
    delay: float = setting("seconds a new triplet waits (450 4.7.1)", seconds, default=300.0)
    retry_window: float = setting(
        "seconds after the delay within which a retry passes", seconds, default=86400.0
    )
    pass_ttl: float = setting("seconds a passed triplet is remembered", seconds, default=2592000.0)


def range_name(r: Reader, value: object, path: str) -> str:
    """A name of an ``ip_ranges`` entry (checked against them once the file is read)."""
    if not isinstance(value, str) or not value:
        r.error(path, f"must be the name of an ip_ranges entry, got {show(value)}")
        return ""
    return value


@dataclass(frozen=True)
class ChecksConfig:
    dns_timeout: float = setting("seconds for one DNSBL/SPF/DKIM lookup", seconds, default=5.0)
    exempt_ranges: tuple[str, ...] = setting(
        "names of ip_ranges entries whose clients skip every check",
        Items(range_name, "a list of ip_ranges names"),
        default=(),
        null=True,
    )
    dnsbl: tuple[DNSBLZone, ...] = setting(
        "DNS blocklists the client's address is looked up in",
        Items(DNSBLZone, "a list of zones ({zone: ..., match: [...]})"),
        default=(),
        null=True,
    )
    spf: str = setting("off | tag | reject", choice("off", "tag", "reject"), default="off")
    dkim: str = setting("off | tag", choice("off", "tag"), default="off")
    authentication_results: bool = setting(
        "add Authentication-Results (RFC 8601)", boolean, default=True
    )
    arc: ARCConfig | None = setting(
        "ARC-seal what we accepted (RFC 8617)", section=ARCConfig, default=None, null=True
    )
    greylisting: GreylistingConfig | None = setting(
        "greylist new (client, sender, recipient) triplets",
        section=GreylistingConfig,
        default=None,
        null=True,
    )


def check_exempt_ranges(r: Reader, checks: ChecksConfig, range_names: set[str]) -> None:
    """Every ``checks.exempt_ranges`` entry must name an ``ip_ranges`` entry."""
    for i, name in enumerate(checks.exempt_ranges):
        if name and name not in range_names:
            r.error(f"checks.exempt_ranges[{i}]", f"no ip_ranges entry is named {show(name)}")
