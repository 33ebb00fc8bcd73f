"""Tests for mxbackup.config.model: keys, defaults and docs come from the dataclasses."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from mxbackup.config import (
    ALL_ALLOWED,
    INTERNET_AUTH,
    KINDS,
    MATRIX_KEYS,
    SECURITIES,
    Authentication,
    Config,
    DeliveryConfig,
    IPRange,
    ManholeConfig,
    Matrix,
    MetricsConfig,
    Route,
    ServerConfig,
    parse,
)
from mxbackup.config.checks import ARCConfig, ChecksConfig, DNSBLZone, GreylistingConfig
from mxbackup.config.model import VerifyRecipients
from mxbackup.config.reader import MISSING, default_of, settings_of, walk_keys

EXAMPLE = Path(__file__).resolve().parents[2] / "etc" / "mx.yaml"
SOURCE = "model.yaml"
SECTIONS = [ServerConfig, IPRange, Matrix, Route, Authentication, DeliveryConfig]
SECTIONS += [ManholeConfig, MetricsConfig, Config, VerifyRecipients, ChecksConfig, DNSBLZone]
SECTIONS += [ARCConfig, GreylistingConfig]


def required_only(tmp_path: Path) -> dict[str, Any]:
    """A document with only the required keys, and each optional section with its own."""
    keys = tmp_path / "keys"
    keys.write_text("ssh-ed25519 AAAA\n")
    return {
        "server": {"hostname": "mx.example.net", "listen": ["tcp:25"], "spool": "spool"},
        "ip_ranges": [{"name": "office", "addresses": ["192.0.2.0/24"]}],
        "routes": [
            {
                "domain": "example.com",
                "target_host": "mail.example.com",
                "authentication": {"username": "u", "password": "p"},
            }
        ],
        "manhole": {"authorized_keys": str(keys)},
        "metrics": {},
    }


def assert_defaults(obj: object, given: tuple[str, ...] = ()) -> None:
    """Every field of ``obj`` left out of the YAML holds the dataclass default."""
    for f, s in settings_of(type(obj)):
        default = default_of(f)
        if default is not MISSING and s.derive is None and f.name not in given:
            assert getattr(obj, f.name) == default, f"{type(obj).__name__}.{f.name}"


def test_required_keys_alone_yield_the_dataclass_defaults(tmp_path: Path) -> None:
    config = parse(required_only(tmp_path), SOURCE)
    (office,) = config.ip_ranges
    (route,) = config.routes
    assert route.authentication is not None and config.manhole and config.metrics
    assert_defaults(config, given=("ip_ranges", "manhole", "metrics"))
    assert_defaults(route, given=("authentication",))
    for obj in [config.server, office, route.authentication, config.manhole, config.metrics]:
        assert_defaults(obj)
    assert config.delivery == DeliveryConfig()
    assert config.metrics == MetricsConfig()
    assert (office.allow, office.require_auth) == (ALL_ALLOWED, INTERNET_AUTH)
    assert office.allow_etrn is False  # derived: not made of loopback addresses only


def test_the_derived_default() -> None:
    data = {
        "server": {"hostname": "mx.example.net", "listen": ["tcp:25"], "spool": "spool"},
        "ip_ranges": [{"name": "lo", "addresses": ["127.0.0.1", "::1"]}],
        "routes": [],
    }
    assert parse(data, SOURCE).ip_ranges[0].allow_etrn is True


def test_optional_sections_left_out_take_their_defaults() -> None:
    data = {
        "server": {"hostname": "mx.example.net", "listen": ["tcp:25"], "spool": "spool"},
        "routes": [],
    }
    assert_defaults(parse(data, SOURCE))


@pytest.mark.parametrize("cls", SECTIONS, ids=lambda c: c.__name__)
def test_every_field_has_a_one_line_doc(cls: type) -> None:
    read = {f.name for f, _ in settings_of(cls)}
    assert read == {f.name for f in dataclasses.fields(cls)} - {"source", "warnings"}
    for f, s in settings_of(cls):
        assert s.doc and "\n" not in s.doc and s.doc == s.doc.strip(), f.name


def test_example_documents_every_key_the_model_reads() -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    keys = {path.rpartition(".")[2].removeprefix("[]") for path, _, _ in walk_keys(Config)}
    keys = {key.rpartition("[].")[2] for key in keys}
    missing = {key for key in keys if f"{key}:" not in text and f"{{{key}:" not in text}
    assert missing == set()


def test_the_model_reads_every_key_of_the_example() -> None:
    paths = {path for path, _, _ in walk_keys(Config)}
    for path in [
        "server.tls.certificate", "ip_ranges[].allow.local_to_local", "accounts[].password_hash",
        "routes[].target_host", "routes[].authentication.password_file", "routes[].addresses",
        "delivery.helo_name", "delivery.dns_servers", "manhole.host_key", "metrics.listen",
    ]:  # fmt: skip
        assert path in paths
    assert len(paths) == len(list(walk_keys(Config)))  # no key is read twice


def test_choices_come_from_the_types() -> None:
    assert KINDS == ("local", "external")
    assert SECURITIES == ("none", "ssl", "starttls", "starttls_required")
    assert MATRIX_KEYS == (
        "local_to_local",
        "local_to_external",
        "external_to_local",
        "external_to_external",
    )


def test_route_defaults_are_stated_once() -> None:
    fields = {f.name: default_of(f) for f in dataclasses.fields(Route)}
    assert fields["retries"] == 100
    assert fields["minutes_between_retries"] == 15
    assert fields["port"] == 25


def test_the_quick_check_keys(tmp_path: Path) -> None:
    """Seconds like the section's other keys: quick_check_interval may be 0 (off),
    quick_check_for may not; the defaults are 2 and 3600."""
    from mxbackup.config import ConfigError

    def delivery(**keys: Any) -> DeliveryConfig:
        data = required_only(tmp_path)
        data["delivery"] = keys
        return parse(data, SOURCE).delivery

    default = delivery()
    assert (default.quick_check_interval, default.quick_check_for) == (2.0, 3600.0)
    assert delivery(quick_check_interval=0, quick_check_for=60).quick_check_interval == 0.0
    assert delivery(quick_check_interval=0.5).quick_check_interval == 0.5
    for bad in ({"quick_check_interval": -1}, {"quick_check_for": 0}, {"quick_check_for": "x"}):
        with pytest.raises(ConfigError) as info:
            delivery(**bad)
        (line,) = info.value.errors
        assert f"delivery.{next(iter(bad))}: must be a number of seconds" in line
