"""Tests for mxbackup.config.values: the value readers for the hard cases, called directly."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from mxbackup.config.reader import Map, Reader
from mxbackup.config.values import (
    DNS_SERVERS,
    AddressList,
    Target,
    address_list,
    backoff,
    dns_server,
    host_name,
    loopback_only,
    password,
    password_hash,
    route_domain,
    targets,
)


def reader() -> Reader:
    return Reader("v.yaml")


@pytest.mark.parametrize(
    ("text", "port", "expected"),
    [
        ("[::1]", 7, Target("::1", 7)),
        ("[::1]:8", 7, Target("::1", 8)),
        ("10.0.0.1:9", 7, Target("10.0.0.1", 9)),
        ("Host.Example.", 7, Target("host.example", 7)),
        ("::1", 7, Target("::1", 7)),
    ],
)
def test_targets_take_the_route_port_unless_they_name_one(
    text: str, port: int, expected: Target
) -> None:
    r = reader()
    assert targets(r, text, "t", port=port) == (expected,)
    assert r.errors == []


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("[::1", "unbalanced brackets"),
        ("[10.0.0.1]:25", "brackets must hold an IPv6 address"),
        ("host:25:26", "write an IPv6 address with a port as [address]:port"),
        ("[::1]:", "the port must be from 1 to 65535"),
        ("host:0", "the port must be from 1 to 65535"),
    ],
)
def test_target_reasons(text: str, reason: str) -> None:
    r = reader()
    assert targets(r, [text], "t", port=25) == ()
    assert r.errors == [
        "v.yaml: t[0]: must be 'host', 'host:port', '[IPv6 address]:port' or an IP address "
        f"({reason}), got {text!r}"
    ]


def test_names() -> None:
    r = reader()
    assert host_name(r, "MX.Example", "h") == "mx.example"
    assert route_domain(r, "*.Example.org.", "d") == "*.example.org"
    assert host_name(r, "*.example.org", "h") == ""
    assert route_domain(r, 5, "d") == ""
    assert r.errors[0].startswith("v.yaml: h: must be a valid host name: ")
    assert r.errors[1] == "v.yaml: d: must be a domain name such as 'example.com', got 5"


def test_dns_servers() -> None:
    r = reader()
    assert DNS_SERVERS(r, ["192.0.2.1", "[2001:db8::1]:5353"], "s") == (
        ("192.0.2.1", 53),
        ("2001:db8::1", 5353),
    )
    assert dns_server(r, "dns.example", "s[0]") is None
    assert r.errors == [
        "v.yaml: s[0]: must be an IP address with an optional :port, got 'dns.example'"
    ]


def test_loopback_only() -> None:
    lo = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1"))
    assert loopback_only(lo)
    assert not loopback_only(())
    assert not loopback_only((*lo, ipaddress.ip_network("10.0.0.0/8")))


def test_address_list_forms(tmp_path: Path) -> None:
    r = reader()
    assert address_list(r, "all", "a") == AddressList()
    listed = address_list(r, ["A@x.example"], "a")
    assert listed == AddressList(kind="list", entries=frozenset({"a@x.example"}))
    assert address_list(r, {}, "a") == AddressList(kind="file", file="")
    assert r.errors == ["v.yaml: a.file: required key is missing"]


def test_secrets_are_never_echoed(tmp_path: Path) -> None:
    r = reader()
    assert password_hash(r, "hunter2", "h") == b""
    m = Map.open(r, {"password": 12345}, "auth", ("password", "password_file"))
    assert m is not None
    assert password(r, m) == ""
    assert not any("hunter2" in line or "12345" in line for line in r.errors)
    assert (
        r.errors[1] == "v.yaml: auth.password: must be a non-empty string (quote it), got a number"
    )


def test_password_file(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("s3cret\n")
    r = reader()
    m = Map.open(r, {"password_file": str(tmp_path / "secret")}, "auth", ("password_file",))
    assert m is not None
    assert password(r, m) == "s3cret"
    assert r.errors == []


@pytest.mark.parametrize("value", [1, 2.5, 10])
def test_backoff(value: float) -> None:
    assert backoff(reader(), value, "b") == float(value)


@pytest.mark.parametrize("value", [0.5, 11, True, "2"])
def test_bad_backoff(value: object) -> None:
    r = reader()
    backoff(r, value, "b")
    assert r.errors[0].startswith("v.yaml: b: must be a number from 1 (fixed interval) to 10")


def test_address_list_entries_are_matched_on_a_labels() -> None:
    r = reader()
    listed = address_list(r, ["Jürgen@Bücher.example", "u@xn--strae-oqa.example"], "a")
    assert listed.entries == frozenset({"jürgen@xn--bcher-kva.example", "u@xn--strae-oqa.example"})
    assert listed.allows("JÜRGEN@xn--bcher-kva.example")
    assert listed.allows("jürgen@BÜCHER.example")
    assert listed.allows("U@straße.example")
    assert not listed.allows("u@strasse.example")
