"""Value readers for the hard cases: host and domain names, endpoints, networks, targets,
address lists (inline or from a file), bcrypt hashes, passwords and DNS servers.

Domain names go through the shared parser, ``mxbackup.names.parse_domain``.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Literal

from mxbackup.config.reader import MISSING, Items, Map, Reader, kind, show
from mxbackup.config.scalars import boolean, read_text, text, warn_if_public
from mxbackup.names import DomainError, lookup_form, parse_domain

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_BCRYPT = re.compile(r"\$2[aby]\$(?:0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}")
_PORT = re.compile(r"[0-9]{1,5}")
_BRACKETED = re.compile(r"\[([^\]]*)\](?::(.*))?")


@dataclass(frozen=True)
class Target:
    host: str
    port: int


@dataclass(frozen=True)
class AddressList:
    """``kind`` is "all" (no list), "list" (inline) or "file" (one address a line)."""

    kind: Literal["all", "list", "file"] = "all"
    entries: frozenset[str] = frozenset()
    file: str | None = None

    def allows(self, address: str) -> bool:
        return self.kind == "all" or address_key(address) in self.entries


def address_key(address: str) -> str:
    """How an address is compared with a list's entries: lower case, the domain in its A-label
    form (``user@bücher.example`` is ``user@xn--bcher-kva.example``)."""
    local, _, domain = address.lower().rpartition("@")
    return f"{local}@{lookup_form(domain) or domain}"


# --- names and endpoints --------------------------------------------------------------------


def host_name(r: Reader, value: object, path: str) -> str:
    return _name(r, value, path, "a host name", "a valid host name:", wildcard=False)


def route_domain(r: Reader, value: object, path: str) -> str:
    what = "a domain name such as 'example.com'"
    return _name(r, value, path, what, f"{what}:", wildcard=True)


def _name(r: Reader, value: object, path: str, what: str, valid: str, *, wildcard: bool) -> str:
    if not isinstance(value, str):
        r.error(path, f"must be {what}, got {show(value)}")
        return ""
    name, problem = _domain_name(value, wildcard=wildcard)
    if problem:
        r.error(path, f"must be {valid} {problem}, got {show(value)}")
    return name


def _domain_name(text: str, *, wildcard: bool) -> tuple[str, str]:
    """(name, "") normalised by ``names.parse_domain`` (IDNA, no all-digit last label), or
    ("", reason)."""
    try:
        return parse_domain(text, wildcard=wildcard, idna=True, numeric_tld=False), ""
    except DomainError as e:
        return "", str(e)


def endpoint(r: Reader, value: object, path: str) -> str | None:
    """A Twisted endpoint description (checked when the server listens)."""
    if isinstance(value, str) and value.strip():
        return value
    r.error(path, f"must be a Twisted endpoint description, got {show(value)}")
    return None


ENDPOINTS = Items(
    endpoint,
    "a list of Twisted endpoint descriptions such as ['tcp:25']",
    empty="needs at least one endpoint description, such as 'tcp:25'",
)


def network(r: Reader, value: object, path: str) -> IPNetwork | None:
    try:
        if isinstance(value, str):
            try:
                return ipaddress.ip_network(value)
            except ValueError:  # host bits set (192.0.2.1/24), or not a network at all
                net = ipaddress.ip_network(value, strict=False)
                r.warning(path, f"{value!r} has host bits set: it means {str(net)!r}")
                return net
    except ValueError:
        pass
    r.error(path, f"must be an IP address or network such as '192.0.2.0/24', got {show(value)}")
    return None


NETWORKS = Items(
    network,
    "a list of IP addresses or networks such as '192.0.2.0/24'",
    empty="needs at least one IP address or network, such as '192.0.2.0/24'",
)


def loopback_only(networks: tuple[IPNetwork, ...]) -> bool:
    return bool(networks) and all(n.is_loopback for n in networks)


def etrn_flag(r: Reader, value: object, path: str, networks: tuple[IPNetwork, ...]) -> bool:
    """``allow_etrn`` as written (its default comes from ``networks``)."""
    return boolean(r, value, path)


def dns_server(r: Reader, value: object, path: str) -> tuple[str, int] | None:
    target, _ = _target(value, 53) if isinstance(value, str) else (None, "")
    if target is None or not _is_ip(target.host):
        r.error(path, f"must be an IP address with an optional :port, got {show(value)}")
        return None
    return (target.host, target.port)


DNS_SERVERS = Items(dns_server, "a list of 'address' or 'address:port'")


def source_address(r: Reader, value: object, path: str) -> str:
    """An IPv4 or IPv6 address (no port), or "" for the system's choice."""
    if value == "" or value is None:
        return ""
    try:
        return str(ipaddress.ip_address(value.strip("[]") if isinstance(value, str) else value))
    except ValueError:
        r.error(path, f"must be an IPv4 or IPv6 address (or empty), got {show(value)}")
        return ""


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


# --- targets --------------------------------------------------------------------------------


def no_targets(port: int, use_mx: bool) -> tuple[Target, ...]:
    """target_host's default: none with ``use_mx`` (the MX hosts are the targets), else required."""
    return () if use_mx else MISSING


def targets(
    r: Reader, value: object, path: str, port: int, use_mx: bool = False
) -> tuple[Target, ...]:
    """One target or a non-empty list; ``port`` is the route's, for entries without one."""
    if isinstance(value, str):
        entries: list[tuple[object, str]] = [(value, path)]
    elif isinstance(value, list) and value:
        entries = [(item, f"{path}[{i}]") for i, item in enumerate(value)]
    else:
        r.error(path, f"must be a host or a non-empty list of hosts, got {show(value)}")
        return ()
    found = []
    for item, item_path in entries:
        target, problem = _target(item, port) if isinstance(item, str) else (None, "")
        if target is None:
            r.error(
                item_path,
                "must be 'host', 'host:port', '[IPv6 address]:port' or an IP address"
                + (f" ({problem})" if problem else "")
                + f", got {show(item)}",
            )
        else:
            found.append(target)
    return tuple(found)


def _target(text: str, default_port: int) -> tuple[Target | None, str]:
    """Parse one target_host entry; returns (target, "") or (None, reason)."""
    if text.startswith("["):
        host, port_text, problem = _bracketed(text)
    else:
        try:
            return Target(str(ipaddress.ip_address(text)), default_port), ""
        except ValueError:
            pass
        host, port_text, problem = _host_and_port(text)
    if problem:
        return None, problem
    if port_text is None:
        return Target(host, default_port), ""
    if not _PORT.fullmatch(port_text) or not 1 <= int(port_text) <= 65535:
        return None, "the port must be from 1 to 65535"
    return Target(host, int(port_text)), ""


def _bracketed(text: str) -> tuple[str, str | None, str]:
    """'[IPv6 address]' with an optional ':port': (host, port text or None, problem)."""
    match = _BRACKETED.fullmatch(text)
    if match is None:
        return "", None, "unbalanced brackets"
    try:
        return str(ipaddress.IPv6Address(match[1])), match[2], ""
    except ValueError:
        return "", None, "brackets must hold an IPv6 address"


def _host_and_port(text: str) -> tuple[str, str | None, str]:
    """'host' or 'host:port' (host an IPv4 address or a host name): (host, port, problem)."""
    host, colon, port_text = text.partition(":")
    if colon and ":" in port_text:
        return "", None, "write an IPv6 address with a port as [address]:port"
    try:
        host = str(ipaddress.IPv4Address(host))
    except ValueError:
        host, problem = _domain_name(host, wildcard=False)
        if problem:
            return "", None, problem
    return host, port_text if colon else None, ""


# --- address lists --------------------------------------------------------------------------


def address_list(r: Reader, value: object, path: str) -> AddressList:
    if isinstance(value, str) and value == "all":
        return AddressList()
    if isinstance(value, list):
        if not value:
            r.error(path, "must not be an empty list (write 'all' to accept every address)")
        found = [_address(r, item, f"{path}[{i}]") for i, item in enumerate(value)]
        return AddressList(kind="list", entries=frozenset(a for a in found if a))
    if isinstance(value, dict):
        return _address_file(r, value, path)
    r.error(path, f"must be 'all', a list of addresses or {{file: path}}, got {show(value)}")
    return AddressList()


def _address_file(r: Reader, value: dict[object, object], path: str) -> AddressList:
    m = Map.open(r, value, path, ("file",))
    assert m is not None
    raw = m.required("file")
    filename = "" if raw is MISSING else text(r, raw, m.at("file"))
    content = read_text(r, m.at("file"), filename) if filename else None
    entries = []
    for number, line in enumerate((content or "").splitlines(), start=1):
        line = line.strip()
        if line and not line.startswith("#"):
            entries.append(_address(r, line, m.at("file"), f"line {number}: "))
    return AddressList(kind="file", entries=frozenset(a for a in entries if a), file=filename)


def _address(r: Reader, value: object, path: str, where: str = "") -> str:
    if isinstance(value, str):
        local, _, domain = value.partition("@")
        if value.count("@") == 1 and local and domain and not any(c.isspace() for c in value):
            return address_key(value)
    r.error(path, f"{where}must be an email address with exactly one '@', got {show(value)}")
    return ""


# --- secrets: never echoed ------------------------------------------------------------------


def password_hash(r: Reader, value: object, path: str) -> bytes:
    # The value is never echoed: it might be a plain password pasted by mistake.
    if isinstance(value, str) and _BCRYPT.fullmatch(value):
        return value.encode("ascii")
    r.error(
        path,
        "must be a bcrypt hash (60 characters starting with $2a$, $2b$ or $2y$), "
        "such as the output of: python -c 'import bcrypt; "
        "print(bcrypt.hashpw(input().encode(), bcrypt.gensalt()).decode())'",
    )
    return b""


def password(r: Reader, m: Map) -> str:
    """The ``password`` key or the content of the ``password_file`` key's file: exactly one."""
    if m.has("password") and m.has("password_file"):
        r.error(m.path, "give either password or password_file, not both")
    elif m.has("password"):
        raw = m.get("password")
        if isinstance(raw, str) and raw:
            return raw
        r.error(m.at("password"), f"must be a non-empty string (quote it), got {kind(raw)}")
    elif m.has("password_file"):
        return _password_file(r, m)
    else:
        r.error(m.path, "needs password or password_file")
    return ""


def _password_file(r: Reader, m: Map) -> str:
    filename = text(r, m.get("password_file"), m.at("password_file"))
    content = read_text(r, m.at("password_file"), filename) if filename else None
    if content is None:
        return ""
    warn_if_public(r, m.at("password_file"), filename)
    secret = content.removesuffix("\n").removesuffix("\r")
    if not secret:
        r.error(m.at("password_file"), f"the file {show(filename)} is empty")
    return secret


def backoff(r: Reader, value: object, path: str) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool) and 1 <= value <= 10:
        return float(value)
    r.error(path, f"must be a number from 1 (fixed interval) to 10, got {show(value)}")
    return 1.0
