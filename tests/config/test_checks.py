"""Tests for the keys added for the next capabilities: checks, state_store, route extras."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import pytest

from mxbackup.config import ConfigError, parse
from mxbackup.config.checks import ChecksConfig, GreylistingConfig
from mxbackup.config.model import VerifyRecipients
from mxbackup.config.stores import StoreURL, parse_store

SOURCE = "c.yaml"


def doc(**extra: Any) -> dict[str, Any]:
    route = {"domain": "example.com", "target_host": "mail.example.com"}
    route.update(extra.pop("route", {}))
    data: dict[str, Any] = {
        "server": {"hostname": "mx.example.net", "listen": ["tcp:25"], "spool": "sp"},
        "routes": [route],
    }
    data.update(extra)
    return data


def errors(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as e:
        parse(data, SOURCE)
    return e.value.errors


def test_defaults_when_absent() -> None:
    config = parse(doc(), SOURCE)
    assert config.checks == ChecksConfig()
    assert config.checks.spf == "off" and config.checks.dnsbl == ()
    assert config.state_store == "sqlite:sp/state.sqlite"
    route = config.routes[0]
    assert route.verify_recipients is None and route.accept_when_target_up
    assert route.max_queued_messages == 0 and route.allow_8bit_conversion and not route.use_mx


def test_sections_take_their_defaults() -> None:
    data = doc(
        checks={"greylisting": {}, "dnsbl": [{"zone": "bl.example"}], "spf": "reject"},
        route={"verify_recipients": {}},
    )
    config = parse(data, SOURCE)
    assert config.checks.greylisting == GreylistingConfig(300.0, 86400.0, 2592000.0)
    assert config.checks.dnsbl[0].zone == "bl.example" and config.checks.dnsbl[0].match == ()
    assert config.routes[0].verify_recipients == VerifyRecipients()
    assert VerifyRecipients().when_unreachable == "accept"


def test_dnsbl_match_is_a_list_of_networks() -> None:
    data = doc(checks={"dnsbl": [{"zone": "bl.example", "match": ["127.0.0.2", "127.0.1.0/24"]}]})
    match = parse(data, SOURCE).checks.dnsbl[0].match
    assert match == (ipaddress.ip_network("127.0.0.2/32"), ipaddress.ip_network("127.0.1.0/24"))


def test_exempt_ranges_must_name_ip_ranges() -> None:
    assert parse(doc(checks={"exempt_ranges": ["My computer"]}), SOURCE)
    assert errors(doc(checks={"exempt_ranges": ["Office"]})) == [
        "c.yaml: checks.exempt_ranges[0]: no ip_ranges entry is named 'Office'"
    ]


def test_bad_values_are_one_line_each(tmp_path: Path) -> None:
    data = doc(
        checks={"spf": "yes", "dkim": "reject", "arc": {"domain": "d.example"}},
        route={"verify_recipients": {"when_unreachable": "refuse"}, "max_queued_messages": -1},
    )
    found = errors(data)
    assert "c.yaml: checks.spf: must be one of off, tag, reject, got 'yes'" in found[0] or any(
        "checks.spf" in e for e in found
    )
    for key in [
        "checks.dkim",
        "checks.arc.selector",
        "checks.arc.private_key",
        "routes[0].verify_recipients.when_unreachable",
        "routes[0].max_queued_messages",
    ]:
        assert any(f"c.yaml: {key}:" in e for e in found), (key, found)


def test_use_mx_makes_target_host_optional() -> None:
    data = doc(route={"use_mx": True})
    del data["routes"][0]["target_host"]
    route = parse(data, SOURCE).routes[0]
    assert route.use_mx and route.targets == ()
    data["routes"][0]["use_mx"] = False
    assert errors(data) == ["c.yaml: routes[0].target_host: required key is missing"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("sqlite:/var/lib/mx/s.db", StoreURL("sqlite", path="/var/lib/mx/s.db")),
        ("redis://127.0.0.1:6380/2", StoreURL("redis", host="127.0.0.1", port=6380, db=2)),
        ("redis://localhost", StoreURL("redis", host="localhost")),
        ("redis://:pw@[::1]:7000/0", StoreURL("redis", host="::1", port=7000, password="pw")),
    ],
)  # fmt: skip
def test_state_stores(text: str, expected: StoreURL) -> None:
    assert parse_store(text) == expected
    assert parse(doc(server={**doc()["server"], "state_store": text}), SOURCE).state_store == text


@pytest.mark.parametrize(
    "text", ["sqlite:", "redis://", "redis://h:99999/0", "redis://h/x", "memcache://h", 5]
)
def test_bad_state_stores(text: object) -> None:
    (line,) = errors(doc(server={**doc()["server"], "state_store": text}))
    assert line.startswith("c.yaml: server.state_store: ")
