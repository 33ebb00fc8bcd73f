"""Tests for mxbackup.config (YAML -> frozen objects) and the check-config command."""

from __future__ import annotations

import copy
import ipaddress
import subprocess
import sys
from pathlib import Path
from typing import Any

import bcrypt
import pytest

from mxbackup.config import (
    DEFAULT_IP_RANGES,
    INTERNET_AUTH,
    Account,
    AddressList,
    Authentication,
    Config,
    ConfigError,
    Matrix,
    ServerConfig,
    Target,
    TLSConfig,
    load,
    parse,
)
from mxbackup.ops import cli

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "etc" / "mx.yaml"
SOURCE = "test.yaml"
HASH = bcrypt.hashpw(b"correct horse", bcrypt.gensalt(rounds=4)).decode()


def minimal(**route: Any) -> dict[str, Any]:
    """The smallest valid document; keyword arguments are added to its only route."""
    return {
        "server": {"hostname": "mx.example.net", "listen": ["tcp:25"], "spool": "spool"},
        "routes": [{"domain": "example.com", "target_host": "mail.example.com", **route}],
    }


def with_server(**server: Any) -> dict[str, Any]:
    data = minimal()
    data["server"].update(server)
    return data


def errors_of(data: object) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse(data, SOURCE)
    errors = info.value.errors
    assert errors, "ConfigError without any error line"
    for line in errors:
        assert "\n" not in line and "\r" not in line
        assert line.startswith(f"{SOURCE}: ")
    return errors


def only_error(data: object) -> str:
    errors = errors_of(data)
    assert len(errors) == 1, errors
    return errors[0]


def route_of(**route: Any) -> Any:
    return parse(minimal(**route), SOURCE).routes[0]


# --- the example ---------------------------------------------------------------------------


def test_example_loads() -> None:
    config = load(str(EXAMPLE))
    assert config.source == str(EXAMPLE)
    assert config.server == ServerConfig(
        hostname="mx2.example.net",
        listen=("tcp:2525:interface=127.0.0.1",),
        spool="./spool",
    )
    assert config.ip_ranges == DEFAULT_IP_RANGES
    assert config.accounts == ()
    first, second = config.routes
    assert first.domain == "example.com"
    assert first.targets == (Target("127.0.0.1", 2526),)
    assert (first.port, first.retries, first.minutes_between_retries) == (2526, 100, 15)
    assert (first.treat_recipient_as, first.treat_sender_as) == ("local", "external")
    assert first.addresses == AddressList()
    assert first.security == "none"
    assert second.domain == "*.example.org"
    assert second.addresses.kind == "list"
    assert len(second.addresses.entries) == 2


def test_example_documents_every_key() -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    keys = [
        "server", "hostname", "listen", "spool", "tls", "certificate", "key",
        "max_message_size", "max_recipients", "max_connections", "max_connections_per_ip",
        "idle_timeout", "max_received_headers", "min_free_space",
        "ip_ranges", "name", "addresses", "allow", "require_auth",
        "local_to_local", "local_to_external", "external_to_local", "external_to_external",
        "accounts", "username", "password_hash",
        "routes", "domain", "target_host", "port", "treat_recipient_as", "treat_sender_as",
        "file", "retries", "minutes_between_retries", "authentication", "password",
        "password_file", "allow_plaintext", "security", "verify_certificate", "ca_file",
    ]  # fmt: skip
    missing = [key for key in keys if f"{key}:" not in text and f"{{{key}:" not in text]
    assert missing == []


# --- defaults and the overall shape ---------------------------------------------------------


def test_minimal_document_takes_the_defaults() -> None:
    config = parse(minimal(), SOURCE)
    assert isinstance(config, Config)
    assert config.source == SOURCE
    assert config.server.tls is None
    assert config.server.max_message_size == 26214400
    assert config.server.max_recipients == 1000
    assert config.server.max_connections == 500
    assert config.server.max_connections_per_ip == 20
    assert config.server.idle_timeout == 300.0
    assert config.server.max_received_headers == 50
    assert config.server.min_free_space == 104857600
    assert config.ip_ranges == DEFAULT_IP_RANGES
    assert config.accounts == ()
    (route,) = config.routes
    assert route.targets == (Target("mail.example.com", 25),)
    assert route.port == 25
    assert route.treat_recipient_as == "local"
    assert route.treat_sender_as == "external"
    assert route.addresses == AddressList(kind="all")
    assert route.retries == 100
    assert route.minutes_between_retries == 15
    assert route.authentication is None
    assert route.security == "none"
    assert route.verify_certificate is True
    assert route.ca_file is None


def test_default_ip_ranges_match_the_contract() -> None:
    my_computer, internet = DEFAULT_IP_RANGES
    assert my_computer.name == "My computer"
    assert my_computer.networks == (
        ipaddress.ip_network("127.0.0.1/32"),
        ipaddress.ip_network("::1/128"),
    )
    assert my_computer.allow == Matrix(True, True, True, True)
    assert my_computer.require_auth == Matrix(False, False, False, False)
    assert internet.name == "Internet"
    assert internet.networks == (ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0"))
    assert internet.allow == Matrix(True, True, True, True)
    assert internet.require_auth == Matrix(True, True, False, True)


def test_empty_route_list_is_allowed() -> None:
    data = minimal()
    data["routes"] = []
    assert parse(data, SOURCE).routes == ()


@pytest.mark.parametrize(
    ("remove", "path"),
    [
        (("server",), "server"),
        (("routes",), "routes"),
        (("server", "hostname"), "server.hostname"),
        (("server", "listen"), "server.listen"),
        (("server", "spool"), "server.spool"),
    ],
)
def test_required_keys(remove: tuple[str, ...], path: str) -> None:
    data = minimal()
    parent = data
    for key in remove[:-1]:
        parent = parent[key]
    del parent[remove[-1]]
    assert f"{SOURCE}: {path}: required key is missing" in errors_of(data)


@pytest.mark.parametrize("key", ["domain", "target_host"])
def test_required_route_keys(key: str) -> None:
    data = minimal()
    del data["routes"][0][key]
    assert only_error(data) == f"{SOURCE}: routes[0].{key}: required key is missing"


@pytest.mark.parametrize("data", [None, [], "server", 42, [minimal()]])
def test_top_level_must_be_a_mapping(data: object) -> None:
    line = only_error(data)
    assert "top level must be a mapping" in line


def test_all_problems_are_collected() -> None:
    data = minimal(port="abc", retries=-1)
    data["server"]["max_conections"] = 5
    data["surprise"] = True
    errors = errors_of(data)
    assert errors == [
        f"{SOURCE}: surprise: unknown key",
        f"{SOURCE}: server.max_conections: unknown key",
        f"{SOURCE}: routes[0].port: must be an integer from 1 to 65535, got 'abc'",
        f"{SOURCE}: routes[0].retries: must be an integer >= 0, got -1",
    ]
    assert str(ConfigError(errors)) == "\n".join(errors)


def test_missing_sections_give_one_line_each() -> None:
    # The hand-written reader also said "server: must be a mapping, got a value of type object".
    assert errors_of({}) == [
        f"{SOURCE}: server: required key is missing",
        f"{SOURCE}: routes: required key is missing",
    ]


def test_errors_keep_the_order_of_the_hand_written_reader() -> None:
    data = minimal(domain="a_b", port="x", target_host="", retries=-1)
    data["delivery"] = {"tick": 0, "helo_name": "bad_name"}
    data["routes"].insert(0, {"domain": "a.example", "target_host": "h"})
    data["routes"].append({"domain": "A.example", "target_host": "h", "port": 0})
    data["ip_ranges"] = [{"name": "x", "addresses": ["::/0"]}, {"name": "x", "addresses": [1]}]
    data["accounts"] = [{"username": "u", "password_hash": HASH}, {"username": "u"}]
    assert [line.split(": ")[1] for line in errors_of(data)] == [
        "ip_ranges[1].name",  # a name is checked for duplicates at once
        "ip_ranges[1].addresses[0]",
        "accounts[1].username",
        "accounts[1].password_hash",
        "routes[1].domain",
        "routes[1].port",  # before target_host: its default port comes from here
        "routes[1].target_host",
        "routes[1].retries",
        "routes[2].port",
        "routes[2].domain",  # a route's domain is checked for duplicates after the route
        "delivery.helo_name",  # first in delivery
        "delivery.tick",
    ]


# --- unknown keys ---------------------------------------------------------------------------


def _add_bogus_key(data: dict[str, Any], where: tuple[str | int, ...]) -> None:
    target: Any = data
    for step in where:
        target = target[step]
    target["bogus"] = 1


@pytest.mark.parametrize(
    ("where", "path"),
    [
        ((), "bogus"),
        (("server",), "server.bogus"),
        (("server", "tls"), "server.tls.bogus"),
        (("ip_ranges", 0), "ip_ranges[0].bogus"),
        (("ip_ranges", 0, "allow"), "ip_ranges[0].allow.bogus"),
        (("ip_ranges", 0, "require_auth"), "ip_ranges[0].require_auth.bogus"),
        (("accounts", 0), "accounts[0].bogus"),
        (("routes", 0), "routes[0].bogus"),
        (("routes", 0, "authentication"), "routes[0].authentication.bogus"),
        (("routes", 0, "addresses"), "routes[0].addresses.bogus"),
    ],
)
def test_unknown_keys_at_every_depth(
    where: tuple[str | int, ...], path: str, tmp_path: Path
) -> None:
    cert = tmp_path / "cert.pem"
    cert.write_text("x")
    addresses = tmp_path / "addresses"
    addresses.write_text("a@example.com\n")
    data = minimal(
        authentication={"username": "u", "password": "p"},
        addresses={"file": str(addresses)},
    )
    data["server"]["tls"] = {"certificate": str(cert), "key": str(cert)}
    data["ip_ranges"] = [
        {"name": "all", "addresses": ["0.0.0.0/0"], "allow": {}, "require_auth": {}}
    ]
    data["accounts"] = [{"username": "u", "password_hash": HASH}]
    assert isinstance(parse(copy.deepcopy(data), SOURCE), Config)
    _add_bogus_key(data, where)
    assert only_error(data) == f"{SOURCE}: {path}: unknown key"


def test_unknown_non_string_key_is_reported_readably() -> None:
    data = minimal()
    data["server"][25] = "x"
    data["server"]["two words"] = "x"
    assert errors_of(data) == [
        f"{SOURCE}: server.25: unknown key",
        f"{SOURCE}: server.'two words': unknown key",
    ]


# --- server ---------------------------------------------------------------------------------


def test_hostname_is_stored_lower_case() -> None:
    assert parse(with_server(hostname="MX2.Example.NET"), SOURCE).server.hostname == (
        "mx2.example.net"
    )


@pytest.mark.parametrize(
    "hostname", ["", "mx_2.example.net", "-mx.example.net", "mx..example", "1.2.3.4", 42, None]
)
def test_bad_hostname(hostname: object) -> None:
    assert only_error(with_server(hostname=hostname)).startswith(f"{SOURCE}: server.hostname: ")


@pytest.mark.parametrize("listen", [[], "tcp:25", [""], [25], None])
def test_bad_listen(listen: object) -> None:
    assert only_error(with_server(listen=listen)).startswith(f"{SOURCE}: server.listen")


def test_listen_keeps_every_endpoint() -> None:
    listen = ["tcp:25", "tcp6:25:interface=\\:\\:"]
    assert parse(with_server(listen=listen), SOURCE).server.listen == tuple(listen)


@pytest.mark.parametrize("spool", ["", 5, None, ["spool"]])
def test_bad_spool(spool: object) -> None:
    assert only_error(with_server(spool=spool)).startswith(f"{SOURCE}: server.spool: ")


def test_spool_is_kept_as_given() -> None:
    assert parse(with_server(spool="./spool/../q"), SOURCE).server.spool == "./spool/../q"


@pytest.mark.parametrize(
    "key",
    [
        "max_message_size",
        "max_recipients",
        "max_connections",
        "max_connections_per_ip",
        "max_received_headers",
    ],
)
@pytest.mark.parametrize("value", [0, -1, True, False, 1.5, "10", None])
def test_limits_must_be_positive_integers(key: str, value: object) -> None:
    line = only_error(with_server(**{key: value}))
    assert line.startswith(f"{SOURCE}: server.{key}: must be an integer >= 1, got ")


def test_bool_is_not_an_int() -> None:
    assert only_error(with_server(max_recipients=True)) == (
        f"{SOURCE}: server.max_recipients: must be an integer >= 1, got true"
    )
    assert only_error(minimal(port=True)) == (
        f"{SOURCE}: routes[0].port: must be an integer from 1 to 65535, got true"
    )


def test_limits_accept_integers() -> None:
    server = parse(with_server(max_message_size=1, min_free_space=0), SOURCE).server
    assert (server.max_message_size, server.min_free_space) == (1, 0)
    big = 10**30
    assert parse(with_server(max_message_size=big), SOURCE).server.max_message_size == big


@pytest.mark.parametrize("value", [-1, True, 0.5, "0"])
def test_min_free_space_must_not_be_negative(value: object) -> None:
    line = only_error(with_server(min_free_space=value))
    assert line.startswith(f"{SOURCE}: server.min_free_space: must be an integer >= 0, got ")


@pytest.mark.parametrize("value", [2.5, 1, 300])
def test_idle_timeout_accepts_positive_numbers(value: float) -> None:
    timeout = parse(with_server(idle_timeout=value), SOURCE).server.idle_timeout
    assert timeout == float(value)
    assert isinstance(timeout, float)


@pytest.mark.parametrize(
    "value", [0, -1, 0.0, float("nan"), float("inf"), 10**400, True, "300", None]
)
def test_bad_idle_timeout(value: object) -> None:
    line = only_error(with_server(idle_timeout=value))
    assert line.startswith(f"{SOURCE}: server.idle_timeout: must be a number of seconds > 0")


def test_tls_files_relative_to_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "tls").mkdir()
    (tmp_path / "tls" / "cert.pem").write_text("cert")
    (tmp_path / "tls" / "key.pem").write_text("key")
    monkeypatch.chdir(tmp_path)
    tls = {"certificate": "tls/cert.pem", "key": "tls/key.pem"}
    assert parse(with_server(tls=tls), SOURCE).server.tls == TLSConfig(
        "tls/cert.pem", "tls/key.pem"
    )


def test_tls_problems(tmp_path: Path) -> None:
    cert = tmp_path / "cert.pem"
    cert.write_text("cert")
    missing = str(tmp_path / "nope.pem")
    errors = errors_of(with_server(tls={"certificate": missing, "key": str(tmp_path)}))
    assert len(errors) == 2
    assert errors[0].startswith(f"{SOURCE}: server.tls.certificate: cannot read '{missing}'")
    assert errors[1].startswith(f"{SOURCE}: server.tls.key: ")
    assert "not a regular file" in errors[1]
    assert only_error(with_server(tls={"certificate": str(cert)})) == (
        f"{SOURCE}: server.tls.key: required key is missing"
    )
    assert only_error(with_server(tls="yes")).startswith(f"{SOURCE}: server.tls: must be a")
    assert parse(with_server(tls=None), SOURCE).server.tls is None


# --- ip_ranges ------------------------------------------------------------------------------


def with_ranges(*ranges: Any) -> dict[str, Any]:
    data = minimal()
    data["ip_ranges"] = list(ranges)
    return data


def test_ip_range_defaults_inside() -> None:
    (office,) = parse(
        with_ranges({"name": "office", "addresses": ["192.0.2.7/24", "2001:db8::1"]}), SOURCE
    ).ip_ranges
    assert office.networks == (
        ipaddress.ip_network("192.0.2.0/24"),
        ipaddress.ip_network("2001:db8::1/128"),
    )
    assert office.allow == Matrix(True, True, True, True)
    assert office.require_auth == INTERNET_AUTH == Matrix(True, True, False, True)


def test_ip_range_partial_matrices() -> None:
    item = {
        "name": "office",
        "addresses": ["10.0.0.0/8"],
        "allow": {"external_to_external": False},
        "require_auth": {"external_to_local": True, "local_to_local": False},
    }
    (office,) = parse(with_ranges(item), SOURCE).ip_ranges
    assert office.allow == Matrix(True, True, True, False)
    assert office.require_auth == Matrix(False, True, True, True)
    assert office.allow.get("external", "external") is False


def test_bad_cidr_names_the_entry() -> None:
    item = {"name": "office", "addresses": ["10.0.0.0/8", "10.0.0.0/33", 10, "example.com"]}
    assert errors_of(with_ranges(item)) == [
        f"{SOURCE}: ip_ranges[0].addresses[1]: must be an IP address or network such as "
        "'192.0.2.0/24', got '10.0.0.0/33'",
        f"{SOURCE}: ip_ranges[0].addresses[2]: must be an IP address or network such as "
        "'192.0.2.0/24', got 10",
        f"{SOURCE}: ip_ranges[0].addresses[3]: must be an IP address or network such as "
        "'192.0.2.0/24', got 'example.com'",
    ]


@pytest.mark.parametrize(
    ("item", "path"),
    [
        ({"addresses": ["10.0.0.0/8"]}, "ip_ranges[0].name"),
        ({"name": "", "addresses": ["10.0.0.0/8"]}, "ip_ranges[0].name"),
        ({"name": "x"}, "ip_ranges[0].addresses"),
        ({"name": "x", "addresses": []}, "ip_ranges[0].addresses"),
        ({"name": "x", "addresses": "10.0.0.0/8"}, "ip_ranges[0].addresses"),
        ({"name": "x", "addresses": ["::/0"], "allow": []}, "ip_ranges[0].allow"),
        (
            {"name": "x", "addresses": ["::/0"], "allow": {"local_to_local": "yes"}},
            "ip_ranges[0].allow.local_to_local",
        ),
        (
            {"name": "x", "addresses": ["::/0"], "require_auth": {"local_to_local": 1}},
            "ip_ranges[0].require_auth.local_to_local",
        ),
        ("office", "ip_ranges[0]"),
    ],
)
def test_bad_ip_range(item: object, path: str) -> None:
    assert only_error(with_ranges(item)).startswith(f"{SOURCE}: {path}: ")


def test_ip_range_names_are_unique() -> None:
    item = {"name": "office", "addresses": ["10.0.0.0/8"]}
    assert only_error(with_ranges(item, item)) == (
        f"{SOURCE}: ip_ranges[1].name: duplicate of ip_ranges[0].name ('office')"
    )


@pytest.mark.parametrize("value", [[], None, "all"])
def test_ip_ranges_must_be_a_non_empty_list(value: object) -> None:
    data = minimal()
    data["ip_ranges"] = value
    assert only_error(data).startswith(f"{SOURCE}: ip_ranges: ")


# --- accounts -------------------------------------------------------------------------------


def with_accounts(*accounts: Any) -> dict[str, Any]:
    data = minimal()
    data["accounts"] = list(accounts)
    return data


def test_accounts_store_the_hash_as_bytes() -> None:
    two_a = "$2a$" + HASH[4:]
    two_y = "$2y$" + HASH[4:]
    config = parse(
        with_accounts(
            {"username": "relay", "password_hash": HASH},
            {"username": "a", "password_hash": two_a},
            {"username": "y", "password_hash": two_y},
        ),
        SOURCE,
    )
    assert config.accounts[0] == Account("relay", HASH.encode())
    assert bcrypt.checkpw(b"correct horse", config.accounts[0].password_hash)
    assert [a.password_hash[:4] for a in config.accounts] == [b"$2b$", b"$2a$", b"$2y$"]


def test_accounts_may_be_null() -> None:
    data = minimal()
    data["accounts"] = None
    assert parse(data, SOURCE).accounts == ()


def test_plain_password_is_refused() -> None:
    errors = errors_of(with_accounts({"username": "relay", "password": "hunter2"}))
    assert errors == [
        f"{SOURCE}: accounts[0].password: plain passwords are refused; use password_hash (bcrypt)",
        f"{SOURCE}: accounts[0].password_hash: required key is missing",
    ]


@pytest.mark.parametrize(
    "bad",
    [
        "hunter2",
        "$2x$" + HASH[4:],
        "$1$" + HASH[3:],
        HASH[:-1],
        HASH + "a",
        HASH[:59] + "!",
        "$2b$99$" + HASH[7:],
        42,
        None,
    ],
)
def test_bad_bcrypt_hash(bad: object) -> None:
    line = only_error(with_accounts({"username": "relay", "password_hash": bad}))
    assert line.startswith(f"{SOURCE}: accounts[0].password_hash: must be a bcrypt hash")
    if isinstance(bad, str):
        assert bad not in line  # never echo what might be a password


def test_account_usernames_are_unique() -> None:
    account = {"username": "relay", "password_hash": HASH}
    assert only_error(with_accounts(account, account)) == (
        f"{SOURCE}: accounts[1].username: duplicate of accounts[0].username ('relay')"
    )


# --- routes: domain -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("domain", "stored"),
    [
        ("example.com", "example.com"),
        ("Example.COM", "example.com"),
        ("example.com.", "example.com"),
        ("*.example.org", "*.example.org"),
        ("*.Example.Org.", "*.example.org"),
        ("bücher.example", "xn--bcher-kva.example"),
        ("*.BÜCHER.example", "*.xn--bcher-kva.example"),
        ("xn--bcher-kva.example", "xn--bcher-kva.example"),
        ("a-b.c0.example", "a-b.c0.example"),
        ("localhost", "localhost"),
        ("a" * 63 + ".com", "a" * 63 + ".com"),
    ],
)
def test_route_domain_normalisation(domain: str, stored: str) -> None:
    assert route_of(domain=domain).domain == stored


@pytest.mark.parametrize(
    "domain",
    [
        "*",
        "*.",
        "*example.org",
        "**.example.org",
        "*.*.example.org",
        "a.*.example.org",
        "example.*",
        "ex*ample.org",
        "-a.example",
        "a-.example",
        "a_b.example",
        "a..example",
        ".example.com",
        "example.com..",
        "",
        " example.com",
        "a" * 64 + ".com",
        ("a" * 60 + ".") * 5 + "com",
        "192.0.2.1",
        "\u00ad.example",
        42,
        None,
        ["example.com"],
    ],
)
def test_bad_route_domain(domain: object) -> None:
    assert only_error(minimal(domain=domain)).startswith(f"{SOURCE}: routes[0].domain: ")


def test_duplicate_domains_after_normalisation() -> None:
    data = minimal()
    data["routes"].append({"domain": "EXAMPLE.com.", "target_host": "other.example.com"})
    data["routes"].append({"domain": "*.example.com", "target_host": "other.example.com"})
    assert only_error(data) == (
        f"{SOURCE}: routes[1].domain: duplicate of routes[0].domain ('example.com')"
    )


# --- routes: targets ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target_host", "port", "targets"),
    [
        ("mail.example.com", 25, [("mail.example.com", 25)]),
        ("MAIL.Example.com.", 25, [("mail.example.com", 25)]),
        ("mail.example.com", 2526, [("mail.example.com", 2526)]),
        ("mail.example.com:2525", 26, [("mail.example.com", 2525)]),
        ("192.0.2.1", 26, [("192.0.2.1", 26)]),
        ("192.0.2.1:587", 26, [("192.0.2.1", 587)]),
        ("2001:db8::1", 26, [("2001:db8::1", 26)]),
        ("2001:DB8:0::1", 26, [("2001:db8::1", 26)]),
        ("[2001:db8::1]:2525", 26, [("2001:db8::1", 2525)]),
        ("[::1]", 26, [("::1", 26)]),
        ("mail.bücher.example", 25, [("mail.xn--bcher-kva.example", 25)]),
        (
            ["a.example.com", "b.example.com:2525", "[::1]:24"],
            26,
            [("a.example.com", 26), ("b.example.com", 2525), ("::1", 24)],
        ),
    ],
)
def test_target_host_forms(target_host: object, port: int, targets: list[tuple[str, int]]) -> None:
    route = route_of(target_host=target_host, port=port)
    assert route.targets == tuple(Target(host, p) for host, p in targets)
    assert route.port == port


@pytest.mark.parametrize(
    "target_host",
    [
        "",
        "mail.example.com:",
        "mail.example.com:0",
        "mail.example.com:65536",
        "mail.example.com:abc",
        "mail.example.com:²",
        "mail.example.com:25:26",
        "[2001:db8::1",
        "[2001:db8::1]25",
        "[mail.example.com]:25",
        "[192.0.2.1]:25",
        "bad_host.example",
        "*.example.com",
        "192.0.2.300",
        [],
        25,
        None,
        {"host": "mail.example.com"},
    ],
)
def test_bad_target_host(target_host: object) -> None:
    line = only_error(minimal(target_host=target_host))
    assert line.startswith(f"{SOURCE}: routes[0].target_host: ")


def test_bad_target_in_a_list_names_the_entry() -> None:
    errors = errors_of(minimal(target_host=["ok.example.com", "bad host", 7]))
    assert len(errors) == 2
    assert errors[0].startswith(f"{SOURCE}: routes[0].target_host[1]: must be 'host', 'host:port'")
    assert errors[0].endswith("got 'bad host'")
    assert errors[1].startswith(f"{SOURCE}: routes[0].target_host[2]: ")
    assert errors[1].endswith("got 7")


@pytest.mark.parametrize("port", ["abc", 0, 65536, -25, True, 25.0, "25", None])
def test_bad_port(port: object) -> None:
    line = only_error(minimal(port=port))
    assert line.startswith(f"{SOURCE}: routes[0].port: must be an integer from 1 to 65535, got ")


def test_bad_port_message() -> None:
    assert only_error(minimal(port="abc")) == (
        f"{SOURCE}: routes[0].port: must be an integer from 1 to 65535, got 'abc'"
    )


# --- routes: kinds, retries, security --------------------------------------------------------


def test_treat_as() -> None:
    route = route_of(treat_recipient_as="external", treat_sender_as="local")
    assert (route.treat_recipient_as, route.treat_sender_as) == ("external", "local")


@pytest.mark.parametrize("key", ["treat_recipient_as", "treat_sender_as"])
@pytest.mark.parametrize("value", ["Local", "remote", True, None])
def test_bad_treat_as(key: str, value: object) -> None:
    assert only_error(minimal(**{key: value})).startswith(
        f"{SOURCE}: routes[0].{key}: must be one of local | external, got "
    )


def test_retries() -> None:
    route = route_of(retries=0, minutes_between_retries=1)
    assert (route.retries, route.minutes_between_retries) == (0, 1)
    assert only_error(minimal(retries=-1)) == (
        f"{SOURCE}: routes[0].retries: must be an integer >= 0, got -1"
    )
    assert only_error(minimal(retries=False)) == (
        f"{SOURCE}: routes[0].retries: must be an integer >= 0, got false"
    )
    assert only_error(minimal(minutes_between_retries=0)) == (
        f"{SOURCE}: routes[0].minutes_between_retries: must be an integer >= 1, got 0"
    )


@pytest.mark.parametrize("security", ["none", "ssl", "starttls", "starttls_required"])
def test_security_choices(security: str) -> None:
    assert route_of(security=security).security == security


@pytest.mark.parametrize("security", ["tls", "SSL", "", True, None])
def test_bad_security(security: object) -> None:
    assert only_error(minimal(security=security)).startswith(
        f"{SOURCE}: routes[0].security: must be one of none | ssl | starttls | "
        "starttls_required, got "
    )


def test_verify_certificate() -> None:
    assert route_of(verify_certificate=False).verify_certificate is False
    assert only_error(minimal(verify_certificate="yes")) == (
        f"{SOURCE}: routes[0].verify_certificate: must be true or false, got 'yes'"
    )
    assert only_error(minimal(verify_certificate=1)).startswith(
        f"{SOURCE}: routes[0].verify_certificate: "
    )


def test_ca_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "ca.pem").write_text("ca")
    monkeypatch.chdir(tmp_path)
    assert route_of(ca_file="ca.pem").ca_file == "ca.pem"
    assert route_of(ca_file=None).ca_file is None
    assert only_error(minimal(ca_file="missing.pem")).startswith(
        f"{SOURCE}: routes[0].ca_file: cannot read 'missing.pem': no such file"
    )
    assert only_error(minimal(ca_file=3)).startswith(f"{SOURCE}: routes[0].ca_file: ")


# --- routes: addresses ----------------------------------------------------------------------


def test_addresses_all_and_list() -> None:
    assert route_of(addresses="all").addresses == AddressList()
    addresses = route_of(addresses=["Alice@Example.com", "bob@example.com"]).addresses
    assert addresses.kind == "list"
    assert addresses.entries == frozenset({"alice@example.com", "bob@example.com"})
    assert addresses.allows("ALICE@example.COM")
    assert not addresses.allows("carol@example.com")


@pytest.mark.parametrize(
    ("addresses", "path"),
    [
        ("ALL", "routes[0].addresses"),
        ("alice@example.com", "routes[0].addresses"),
        (True, "routes[0].addresses"),
        (None, "routes[0].addresses"),
        ([], "routes[0].addresses"),
        (["ok@example.com", "no-at-sign"], "routes[0].addresses[1]"),
        (["a@b@example.com"], "routes[0].addresses[0]"),
        (["@example.com"], "routes[0].addresses[0]"),
        (["alice@"], "routes[0].addresses[0]"),
        (["al ice@example.com"], "routes[0].addresses[0]"),
        ([42], "routes[0].addresses[0]"),
        ({}, "routes[0].addresses.file"),
        ({"file": ""}, "routes[0].addresses.file"),
    ],
)
def test_bad_addresses(addresses: object, path: str) -> None:
    assert only_error(minimal(addresses=addresses)).startswith(f"{SOURCE}: {path}: ")


def test_address_file_is_read_now(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "addresses.txt").write_text(
        "# who may receive mail\n\n  Alice@Example.com  \nbob@example.com\n   # indented comment\n"
    )
    monkeypatch.chdir(tmp_path)
    addresses = route_of(addresses={"file": "addresses.txt"}).addresses
    assert addresses == AddressList(
        kind="file",
        entries=frozenset({"alice@example.com", "bob@example.com"}),
        file="addresses.txt",
    )


def test_address_file_may_be_empty(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_text("# nobody yet\n")
    assert route_of(addresses={"file": str(empty)}).addresses.entries == frozenset()


def test_missing_address_file(tmp_path: Path) -> None:
    missing = str(tmp_path / "missing.txt")
    assert only_error(minimal(addresses={"file": missing})).startswith(
        f"{SOURCE}: routes[0].addresses.file: cannot read '{missing}': no such file"
    )


def test_address_file_problems(tmp_path: Path) -> None:
    bad = tmp_path / "bad.txt"
    bad.write_text("ok@example.com\nnot an address\n")
    assert only_error(minimal(addresses={"file": str(bad)})) == (
        f"{SOURCE}: routes[0].addresses.file: line 2: must be an email address with exactly "
        "one '@', got 'not an address'"
    )
    binary = tmp_path / "binary"
    binary.write_bytes(b"\xff\xfe\x00")
    assert "not UTF-8" in only_error(minimal(addresses={"file": str(binary)}))
    assert "not a regular file" in only_error(minimal(addresses={"file": str(tmp_path)}))


# --- routes: authentication -----------------------------------------------------------------


def test_authentication_with_password() -> None:
    route = route_of(authentication={"username": "backup", "password": "s3cret"})
    assert route.authentication == Authentication("backup", "s3cret", allow_plaintext=False)
    route = route_of(
        authentication={"username": "backup", "password": "s3cret", "allow_plaintext": True}
    )
    assert route.authentication == Authentication("backup", "s3cret", allow_plaintext=True)
    assert route_of(authentication=None).authentication is None


def test_authentication_with_password_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "secret").write_text("s3cret \n")
    (tmp_path / "crlf").write_bytes(b"s3cret\r\n")
    (tmp_path / "empty").write_text("\n")
    monkeypatch.chdir(tmp_path)
    auth = route_of(authentication={"username": "backup", "password_file": "secret"})
    assert auth.authentication == Authentication("backup", "s3cret ")
    auth = route_of(authentication={"username": "backup", "password_file": "crlf"})
    assert auth.authentication == Authentication("backup", "s3cret")
    line = only_error(minimal(authentication={"username": "backup", "password_file": "empty"}))
    assert line == f"{SOURCE}: routes[0].authentication.password_file: the file 'empty' is empty"
    line = only_error(minimal(authentication={"username": "backup", "password_file": "nope"}))
    assert line.startswith(
        f"{SOURCE}: routes[0].authentication.password_file: cannot read 'nope': no such file"
    )


def test_password_or_password_file_exactly_one(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("s3cret")
    both = {"username": "u", "password": "p", "password_file": str(secret)}
    assert only_error(minimal(authentication=both)) == (
        f"{SOURCE}: routes[0].authentication: give either password or password_file, not both"
    )
    assert only_error(minimal(authentication={"username": "u"})) == (
        f"{SOURCE}: routes[0].authentication: needs password or password_file"
    )


@pytest.mark.parametrize(
    ("authentication", "path"),
    [
        ({"password": "p"}, "routes[0].authentication.username"),
        ({"username": "", "password": "p"}, "routes[0].authentication.username"),
        ({"username": "u", "password": ""}, "routes[0].authentication.password"),
        ({"username": "u", "password": 12345}, "routes[0].authentication.password"),
        (
            {"username": "u", "password": "p", "allow_plaintext": "no"},
            "routes[0].authentication.allow_plaintext",
        ),
        ({"username": "u", "password_file": None}, "routes[0].authentication.password_file"),
        ("u:p", "routes[0].authentication"),
    ],
)
def test_bad_authentication(authentication: object, path: str) -> None:
    line = only_error(minimal(authentication=authentication))
    assert line.startswith(f"{SOURCE}: {path}: ")
    assert "12345" not in line  # a password is never echoed


# --- load: the file itself ------------------------------------------------------------------


def load_errors(path: Path | str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(str(path))
    for line in info.value.errors:
        assert "\n" not in line
        assert line.startswith(f"{path}: ")
    return info.value.errors


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    assert load_errors(path) == [f"{path}: file not found"]


def test_unreadable_file(tmp_path: Path) -> None:
    (line,) = load_errors(tmp_path)
    assert line.startswith(f"{tmp_path}: cannot read the file: ")


def test_yaml_syntax_error_gives_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("server:\n  hostname: a: b\n")
    assert load_errors(path) == [
        f"{path}: YAML syntax error at line 2, column 14: mapping values are not allowed here"
    ]
    path.write_text("routes: [1, 2\n")
    (line,) = load_errors(path)
    assert line.startswith(f"{path}: YAML syntax error at line 2, column 1: ")


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", "the top level must be a mapping"),
        (b"- server\n", "the top level must be a mapping"),
        (b"just text\n", "the top level must be a mapping"),
        (b"a: 1\n---\nb: 2\n", "YAML syntax error at line 2, column 1: expected a single"),
        (b"a: \x00\n", "not valid YAML text at character 3: unacceptable character #x0000"),
        (b"a: \xff\xfe\xfd\n", "not valid YAML text"),
        (b"a: !!python/object:os.system x\n", "YAML syntax error at line 1, column 4"),
        (b"a: 2020-13-45\n", "YAML value cannot be read: month must be in 1..12"),
        (b"a: 1" + b"1" * 5000 + b"\n", "YAML value cannot be read"),
        (b"a: " + b"[" * 5000 + b"]" * 5000 + b"\n", "nested too deeply"),
    ],
)
def test_bad_files(tmp_path: Path, content: bytes, expected: str) -> None:
    path = tmp_path / "mx.yaml"
    path.write_bytes(content)
    (line,) = load_errors(path)
    assert expected in line


def test_load_reports_key_paths_with_the_file_name(tmp_path: Path) -> None:
    path = tmp_path / "mx.yaml"
    path.write_text(
        EXAMPLE.read_text(encoding="utf-8")
        .replace("max_connections: 500", "max_conections: 500")
        .replace("port: 2526", "port: abc")
    )
    assert load_errors(path) == [
        f"{path}: server.max_conections: unknown key",
        f"{path}: routes[0].port: must be an integer from 1 to 65535, got 'abc'",
    ]


def test_error_lines_stay_single_lines() -> None:
    data = minimal(domain="a\nb.example", target_host="x\r\ny", port="1\n2")
    data["server"]["new\nline"] = 1
    data["server"]["hostname"] = "\u2028weird\x85"
    errors = errors_of(data)
    assert len(errors) == 5
    assert all(len(line.splitlines()) == 1 for line in errors)
    with pytest.raises(ConfigError) as info:
        parse({"bad\nkey": 1}, "multi\nline.yaml")
    assert all(len(line.splitlines()) == 1 for line in info.value.errors)


def test_long_values_are_shortened_in_errors() -> None:
    line = only_error(minimal(port="x" * 10_000))
    assert len(line) < 250


def test_the_package_is_pure() -> None:
    code = (
        "import sys, mxbackup.config; "
        "print(sorted(m for m in sys.modules if m.startswith('twisted')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert result.stdout == "[]\n"


# --- the command line -----------------------------------------------------------------------


def test_check_config_ok(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["check-config", str(EXAMPLE)]) == 0
    out, err = capsys.readouterr()
    assert out == f"OK: {EXAMPLE} (2 routes, 2 ip ranges)\n"
    assert err == ""


def test_check_config_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "mx.yaml"
    path.write_text("server: {hostname: mx.example.net, listen: [tcp:25], spool: s, x: 1}\n")
    assert cli.main(["check-config", str(path)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == f"{path}: server.x: unknown key\n{path}: routes: required key is missing\n"


def test_check_config_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "nope.yaml"
    assert cli.main(["check-config", str(path)]) == 1
    assert capsys.readouterr().err == f"{path}: file not found\n"


def test_usage_errors_return_a_status(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([]) == 2
    assert cli.main(["check-config"]) == 2
    assert cli.main(["--help"]) == 0
    assert "check-config" in capsys.readouterr().out


def test_module_runs_as_a_program() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mxbackup.ops.cli", "check-config", "etc/mx.yaml"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (result.returncode, result.stdout, result.stderr) == (
        0,
        "OK: etc/mx.yaml (2 routes, 2 ip ranges)\n",
        "",
    )
