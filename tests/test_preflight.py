"""What check-config and the server both check beyond the YAML (mxbackup.preflight)."""

from __future__ import annotations

from typing import Any

import bcrypt

from mxbackup import config as config_module
from mxbackup.preflight import preflight
from tlsutil import make_cert

SOURCE = "mx.yaml"


def config(**server: Any) -> Any:
    extra = server.pop("extra", {})
    data = {
        "server": {"hostname": "mx.test", "listen": ["tcp:2525:interface=127.0.0.1"]}
        | {"spool": "spool"}
        | server,
        "routes": [{"domain": "example.com", "target_host": "192.0.2.10"}],
        **extra,
    }
    return config_module.parse(data, SOURCE)


def test_a_sound_configuration_has_nothing_to_say():
    report = preflight(config())
    assert (report.errors, report.warnings, report.tls_context) == ([], [], None)


def test_an_endpoint_twisted_cannot_parse_is_an_error():
    """Regression (issue 15): check-config said OK for ``tcp:25xx``, which the server then
    refused."""
    report = preflight(
        config(
            listen=["tcp:25xx"],
            extra={"metrics": {"listen": "nonsense:1"}},
        )
    )
    assert report.errors[0].startswith(f"{SOURCE}: server.listen[0]: bad endpoint 'tcp:25xx': ")
    assert report.errors[1].startswith(f"{SOURCE}: metrics.listen: bad endpoint 'nonsense:1': ")


def test_accounts_without_tls_are_a_warning():
    account = {"username": "u", "password_hash": bcrypt.hashpw(b"x", bcrypt.gensalt(4)).decode()}
    report = preflight(config(extra={"accounts": [account]}))
    assert report.errors == []
    assert report.warnings == [
        f"{SOURCE}: accounts: AUTH is offered only over TLS and server.tls is not set: "
        "no account can log in"
    ]


def test_a_target_that_is_our_own_listening_address_is_an_error():
    data = {
        "server": {"hostname": "mx.test", "listen": ["tcp:2525"], "spool": "spool"},
        "routes": [
            {"domain": "example.com", "target_host": "127.0.0.1", "port": 2525},
            {"domain": "example.net", "target_host": "127.0.0.1", "port": 25},
        ],
    }
    report = preflight(config_module.parse(data, SOURCE))
    assert report.errors == [
        f"{SOURCE}: routes[0].target_host: 127.0.0.1:2525 is one of our own listening "
        "addresses (the mail would come back to us)"
    ]


def test_tls_that_does_not_load_is_an_error_and_one_that_does_is_returned(tmp_path):
    empty = tmp_path / "empty.pem"
    empty.write_text("")
    missing = preflight(config(tls={"certificate": str(empty), "key": str(empty)}))
    assert missing.errors == [
        f"{SOURCE}: server.tls: cannot load certificate/key: no certificate found"
    ]
    cert, key = make_cert(tmp_path)
    loaded = preflight(config(tls={"certificate": str(cert), "key": str(key)}))
    assert loaded.errors == [] and loaded.tls_context is not None


def test_a_network_with_host_bits_set_is_a_warning():
    """Regression (issue 15): ``192.0.2.1/24`` was read as 192.0.2.0/24 without a word."""
    ranges = [
        {"name": "office", "addresses": ["192.0.2.1/24", "2001:DB8::/32", "198.51.100.7"]},
    ]
    report = preflight(config(extra={"ip_ranges": ranges}))
    assert report.errors == []
    assert report.warnings == [
        f"{SOURCE}: ip_ranges[0].addresses[0]: '192.0.2.1/24' has host bits set: "
        "it means '192.0.2.0/24'"
    ]


def test_listen_forms_that_are_valid_never_crash_the_check(monkeypatch):
    """Regression (review): an escaped IPv6 interface or an interface given by name made
    the own-address check raise; ``port=`` was not read; a missing systemd socket raised."""
    data = {
        "server": {
            "hostname": "mx.test",
            "listen": [
                "tcp6:2525:interface=\\:\\:1",
                "tcp:2526:interface=localhost",
                "tcp:port=2527:interface=127.0.0.2",
                "systemd:domain=INET:index=0",
            ],
            "spool": "spool",
        },
        "routes": [
            {"domain": "a.test", "target_host": "[::1]:2525"},
            {"domain": "b.test", "target_host": "127.0.0.2", "port": 2527},
            {"domain": "c.test", "target_host": "localhost", "port": 2526},
        ],
    }
    monkeypatch.delenv("LISTEN_FDS", raising=False)
    report = preflight(config_module.parse(data, SOURCE))
    assert report.errors == [
        f"{SOURCE}: routes[0].target_host: ::1:2525 is one of our own listening addresses "
        "(the mail would come back to us)",
        f"{SOURCE}: routes[1].target_host: 127.0.0.2:2527 is one of our own listening "
        "addresses (the mail would come back to us)",
    ]
    monkeypatch.setenv("LISTEN_FDS", "1")
    report = preflight(config_module.parse(data, SOURCE))
    assert report.errors[0] == (
        f"{SOURCE}: server.listen[3]: bad endpoint 'systemd:domain=INET:index=0': "
        "no such socket from systemd"
    )


def test_accounts_of_different_bcrypt_costs_are_a_warning():
    accounts = [
        {"username": f"u{cost}", "password_hash": f"$2b${cost:02d}$" + "a" * 53} for cost in (4, 5)
    ]
    report = preflight(config(extra={"accounts": accounts}))
    assert any("bcrypt costs 4, 5" in w for w in report.warnings), report.warnings
    one_cost = [dict(a, password_hash="$2b$04$" + "a" * 53) for a in accounts]
    assert not any("bcrypt" in w for w in preflight(config(extra={"accounts": one_cost})).warnings)


def test_extra_certificate_needs_its_key_and_another_key_type(tmp_path):
    cert, key = make_cert(tmp_path)
    tls = {"certificate": str(cert), "key": str(key), "extra_certificate": str(cert)}
    report = preflight(config(tls=tls))
    assert any("extra_certificate and extra_key go together" in e for e in report.errors)
    report = preflight(config(tls=dict(tls, extra_key=str(key))))
    assert any("same key type" in e for e in report.errors), report.errors


def test_secrets_readable_by_every_user_are_warnings(tmp_path):
    import os

    import yaml

    secret = tmp_path / "route.secret"
    secret.write_text("pw\n")
    cert, key = make_cert(tmp_path)
    data = {
        "server": {"hostname": "mx.test", "listen": ["tcp:2525"], "spool": str(tmp_path / "s")},
        "accounts": [{"username": "u", "password_hash": "$2b$04$" + "a" * 53}],
        "routes": [
            {
                "domain": "example.com",
                "target_host": "192.0.2.10",
                "authentication": {"username": "b", "password_file": str(secret)},
            }
        ],
    }
    data["server"]["tls"] = {"certificate": str(cert), "key": str(key)}
    path = tmp_path / "mx.yaml"
    path.write_text(yaml.safe_dump(data))
    for name in (path, secret, key):
        os.chmod(name, 0o644)
    warnings = preflight(config_module.load(str(path))).warnings
    assert any("mx.yaml holds password hashes" in w for w in warnings), warnings
    assert any("password_file" in w and "mode 0644" in w for w in warnings), warnings
    assert any("server.tls.key" in w and "chmod o-r" in w for w in warnings), warnings
    for name in (path, secret, key):
        os.chmod(name, 0o640)
    assert preflight(config_module.load(str(path))).warnings == []


def test_use_mx_routes_need_no_target_but_not_a_wildcard():
    data = {
        "server": {"hostname": "mx.test", "listen": ["tcp:2525"], "spool": "spool"},
        "routes": [
            {"domain": "example.com", "use_mx": True},
            {"domain": "*.example.org", "use_mx": True},
            {"domain": "example.net", "use_mx": True, "target_host": "192.0.2.1"},
        ],
    }
    report = preflight(config_module.parse(data, SOURCE))
    assert report.errors == [
        f"{SOURCE}: routes[1].use_mx: not supported for a wildcard domain yet (each subdomain "
        "has its own MX records): give target_host, or one route per domain"
    ]
    assert report.warnings == [
        f"{SOURCE}: routes[2].target_host: ignored: use_mx is true (the MX hosts are the targets)"
    ]
