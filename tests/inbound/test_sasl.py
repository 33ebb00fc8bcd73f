"""AUTH (pitfall 4): only over TLS, only with accounts; malformed input answered."""

from __future__ import annotations

import base64

import pytest
from twisted.internet import defer

from helpers import Harness, base_config
from mxbackup import replies
from mxbackup.inbound.sasl import Exchange


def auth_harness(tmp_path, ok_user="relay-user", ok_pass="secret"):
    data = base_config(tmp_path)
    import bcrypt

    data["accounts"] = [
        {"username": ok_user, "password_hash": bcrypt.hashpw(b"x", bcrypt.gensalt(4)).decode()}
    ]
    check = lambda u, p: defer.succeed(u == ok_user and p == ok_pass)  # noqa: E731
    return Harness(tmp_path, data, check_password=check, tls_context=object())


def test_auth_not_offered_or_accepted_before_tls(tmp_path):
    h = auth_harness(tmp_path)
    c = h.connect_tls()
    c.read()
    assert not any("AUTH" in line for line in c.send(b"EHLO c.test\r\n"))
    assert c.send(b"AUTH PLAIN AHJlbGF5LXVzZXIAc2VjcmV0\r\n")[0].startswith("538 5.7.11")


def test_auth_plain_and_login_after_tls(tmp_path):
    import base64

    h = auth_harness(tmp_path)
    c = h.connect_tls()
    c.send(b"EHLO c.test\r\nSTARTTLS\r\n")
    assert "AUTH PLAIN LOGIN" in c.send(b"EHLO c.test\r\n")[-1]
    bad = base64.b64encode(b"\0relay-user\0wrong")
    assert c.send(b"AUTH PLAIN " + bad + b"\r\n")[0].startswith("535 5.7.8")
    assert c.send(b"AUTH PLAIN !!!notbase64\r\n")[0].startswith("501 5.5.2")
    assert c.send(b"AUTH PLAIN " + base64.b64encode(b"no-nuls") + b"\r\n")[0].startswith("501")
    assert c.send(b"AUTH CRAM-MD5\r\n")[0].startswith("504 5.5.4")
    assert c.send(b"AUTH LOGIN\r\n") == ["334 VXNlcm5hbWU6"]
    assert c.send(base64.b64encode(b"relay-user") + b"\r\n") == ["334 UGFzc3dvcmQ6"]
    assert c.send(base64.b64encode(b"secret") + b"\r\n")[0].startswith("235 2.7.0")
    assert c.proto.authenticated
    assert c.send(b"AUTH PLAIN x\r\n")[0].startswith("503 5.5.1")
    # Authenticated: relaying to an external domain is allowed by the default ranges.
    assert c.codes(b"MAIL FROM:<s@sender.test>\r\nRCPT TO:<x@elsewhere.test>\r\n") == [250, 250]


def test_auth_abort_and_plain_with_empty_initial_response(tmp_path):
    h = auth_harness(tmp_path)
    c = h.connect_tls()
    c.send(b"EHLO c.test\r\nSTARTTLS\r\nEHLO c.test\r\n")
    assert c.send(b"AUTH PLAIN\r\n") == ["334 "]
    assert c.send(b"*\r\n")[0].startswith("501 5.7.0")
    assert c.codes(b"NOOP\r\n") == [250]


def test_auth_without_accounts_is_not_available(h):
    c = h.connect()
    c.read()
    assert c.send(b"AUTH PLAIN AGEAYg==\r\n")[0].startswith("502 5.5.1")


def test_password_longer_than_bcrypt_limit_is_refused_cleanly(tmp_path):
    """bcrypt refuses > 72 bytes: the check must say no, and the session stay usable."""
    import base64

    import bcrypt

    from mxbackup.check_wiring import make_password_check

    data = base_config(tmp_path)
    data["accounts"] = [
        {"username": "u", "password_hash": bcrypt.hashpw(b"pw", bcrypt.gensalt(4)).decode()}
    ]
    from mxbackup import config as config_module

    cfg = config_module.parse(data, "t.yaml")

    class SyncReactor:
        def getThreadPool(self):
            return None

    import twisted.internet.threads as threads_mod

    real = threads_mod.deferToThreadPool
    threads_mod.deferToThreadPool = lambda r, p, f, *a: defer.maybeDeferred(f, *a)
    try:
        check = make_password_check(SyncReactor(), cfg)
        h = Harness(tmp_path, data, check_password=check, tls_context=object())
        c = h.connect_tls()
        c.send(b"EHLO c.test\r\nSTARTTLS\r\nEHLO c.test\r\n")
        long_pw = base64.b64encode(b"\0u\0" + b"a" * 80)
        assert c.send(b"AUTH PLAIN " + long_pw + b"\r\n")[0].startswith("535 5.7.8")
        assert c.codes(b"NOOP\r\n") == [250]
        ok = base64.b64encode(b"\0u\0pw")
        assert c.send(b"AUTH PLAIN " + ok + b"\r\n")[0].startswith("235")
    finally:
        threads_mod.deferToThreadPool = real


def test_failing_password_check_ends_the_exchange(tmp_path):
    import base64

    h = auth_harness(tmp_path)
    h.factory.check_password = lambda u, p: defer.fail(RuntimeError("boom"))
    c = h.connect_tls()
    c.send(b"EHLO c.test\r\nSTARTTLS\r\nEHLO c.test\r\n")
    lines = c.send(b"AUTH PLAIN " + base64.b64encode(b"\0relay-user\0secret") + b"\r\n")
    assert lines[0].startswith("451 4.3.0")
    assert c.codes(b"NOOP\r\n") == [250]


def test_plain_with_foreign_authorization_identity_is_refused(tmp_path):
    import base64

    h = auth_harness(tmp_path)
    c = h.connect_tls()
    c.send(b"EHLO c.test\r\nSTARTTLS\r\nEHLO c.test\r\n")
    resp = base64.b64encode(b"someone-else\0relay-user\0secret")
    assert c.send(b"AUTH PLAIN " + resp + b"\r\n")[0].startswith("501 5.5.2")
    same = base64.b64encode(b"relay-user\0relay-user\0secret")
    assert c.send(b"AUTH PLAIN " + same + b"\r\n")[0].startswith("235")


def test_over_long_sasl_line_ends_the_exchange(tmp_path):
    h = auth_harness(tmp_path)
    c = h.connect_tls()
    c.send(b"EHLO c.test\r\nSTARTTLS\r\nEHLO c.test\r\n")
    assert c.send(b"AUTH LOGIN\r\n")[0].startswith("334")
    assert c.send(b"A" * 13000 + b"\r\n")[0].startswith("501 5.5.2")
    assert c.codes(b"NOOP\r\n") == [250]
    assert c.send(b"AUTH LOGIN\r\n")[0].startswith("334")
    assert c.codes(b"QQ" * 400 + b"\r\n") == [334]  # 800 octets: allowed in SASL (not 512)


def test_over_long_sasl_line_without_end_is_skipped_not_read_as_a_command(tmp_path):
    h = auth_harness(tmp_path)
    c = h.connect_tls()
    c.send(b"EHLO c.test\r\nSTARTTLS\r\n")
    assert c.send(b"AUTH LOGIN\r\n") == ["334 VXNlcm5hbWU6"]
    assert c.send(b"A" * 13000)[0].startswith("501 5.5.2")
    assert c.send(b"A QUIT\r\n") == []  # the rest of that line: thrown away
    assert c.codes(b"NOOP\r\n") == [250]


def test_auth_in_a_transaction_is_refused(tmp_path):
    h = auth_harness(tmp_path)
    c = h.connect_tls()
    c.send(b"EHLO c.test\r\nSTARTTLS\r\n")
    c.send(b"EHLO c.test\r\nMAIL FROM:<s@sender.test>\r\n")
    assert c.send(b"AUTH PLAIN\r\n") == [str(replies.AUTH_IN_TRANSACTION)]


def test_exchange_plain():
    exchange = Exchange("PLAIN")
    assert exchange.challenge() == ""
    assert exchange.respond(b"\0user\0pw") == ("user", "pw")
    assert exchange.respond(b"user\0user\0pw") == ("user", "pw")
    for bad in (b"user\0pw", b"\0\0pw", b"other\0user\0pw", b"\0us\xffer\0pw"):
        with pytest.raises(ValueError):
            exchange.respond(bad)


def test_exchange_login():
    exchange = Exchange("LOGIN")
    assert base64.b64decode(exchange.challenge()) == b"Username:"
    with pytest.raises(ValueError):
        exchange.respond(b"")
    assert exchange.respond(b"user") is None
    assert base64.b64decode(exchange.challenge()) == b"Password:"
    assert exchange.respond(b"") == ("user", "")


def test_failed_auth_is_limited_per_client_across_connections(tmp_path):
    """After auth_failure_limit failures, AUTH answers 454 4.7.0 (no password is checked) on
    every connection from that client until the window has passed; others are unaffected."""
    data = base_config(tmp_path, auth_failure_limit=2, auth_failure_window=600)
    data["accounts"] = [{"username": "u", "password_hash": "$2b$04$" + "a" * 53}]
    checked = []

    def check(u, p):
        checked.append(u)
        return defer.succeed(p == "right")

    h = Harness(tmp_path, data, check_password=check, tls_context=object())
    wrong = b"AUTH PLAIN " + base64.b64encode(b"\0u\0wrong") + b"\r\n"
    right = b"AUTH PLAIN " + base64.b64encode(b"\0u\0right") + b"\r\n"
    for _ in range(2):
        c = h.connect_tls("192.0.2.5")
        c.send(b"EHLO c.test\r\nSTARTTLS\r\nEHLO c.test\r\n")
        assert c.send(wrong)[0].startswith("535 5.7.8")
    c = h.connect_tls("192.0.2.5")
    c.send(b"EHLO c.test\r\nSTARTTLS\r\nEHLO c.test\r\n")
    assert c.send(right)[0].startswith("454 4.7.0")
    assert len(checked) == 2
    other = h.connect_tls("192.0.2.6")
    other.send(b"EHLO c.test\r\nSTARTTLS\r\nEHLO c.test\r\n")
    assert other.send(right)[0].startswith("235")
    h.clock.advance(601)  # (the idle connections have timed out by now)
    c = h.connect_tls("192.0.2.5")
    c.send(b"EHLO c.test\r\nSTARTTLS\r\nEHLO c.test\r\n")
    assert c.send(right)[0].startswith("235")
