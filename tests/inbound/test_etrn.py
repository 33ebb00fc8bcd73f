"""ETRN (RFC 1985): only from allowed ranges, only for our routes, through the injected queue."""

from __future__ import annotations

import pytest

from helpers import Harness


class Flusher:
    def __init__(self, count: int = 2, fail: bool = False) -> None:
        self.count, self.fail = count, fail
        self.flushed: list[str | None] = []

    def keys_for_domain(self, domain: str) -> list[str]:
        return [domain] if domain == "example.com" else []

    def flush(self, key: str | None = None) -> int:
        if self.fail:
            raise RuntimeError("queue broken")
        self.flushed.append(key)
        return self.count


@pytest.fixture
def etrn(tmp_path):
    h = Harness(tmp_path)  # the default ranges: loopback may ETRN
    h.factory.etrn = Flusher()
    return h


def test_etrn_advertised_and_flushes_a_route(etrn):
    c = etrn.connect("127.0.0.1")
    c.read()
    assert c.send(b"EHLO c.test\r\n")[-1] == "250 ETRN"
    assert c.send(b"ETRN example.com\r\n") == [
        "253 2.0.0 2 pending messages for node example.com started"
    ]
    assert etrn.factory.etrn.flushed == ["example.com"]


def test_etrn_forms(etrn):
    c = etrn.connect("127.0.0.1")
    c.read()
    assert c.send(b"ETRN @example.org\r\n")[0].startswith("253")
    assert etrn.factory.etrn.flushed == ["*.example.org"]
    assert c.send(b"ETRN #example.com\r\n")[0].startswith("253")
    assert c.send(b"ETRN elsewhere.test\r\n")[0].startswith("459 4.7.1")
    assert c.send(b"ETRN\r\n")[0].startswith("501 5.5.4")
    assert c.send(b"ETRN bad..name\r\n")[0].startswith("501 5.5.4")
    etrn.factory.etrn.count = 0
    assert c.send(b"ETRN example.com\r\n") == ["251 2.0.0 No messages waiting for node example.com"]


def test_etrn_refused_from_other_addresses_and_in_a_transaction(etrn):
    c = etrn.connect("192.0.2.1")
    c.read()
    assert "ETRN" not in " ".join(c.send(b"EHLO c.test\r\n"))
    assert c.send(b"ETRN example.com\r\n")[0].startswith("459 4.7.1")
    c = etrn.connect("127.0.0.1")
    c.send(b"MAIL FROM:<s@sender.test>\r\n")
    assert c.send(b"ETRN example.com\r\n")[0].startswith("503 5.5.1")


def test_etrn_without_a_queue_is_not_offered(tmp_path):
    c = Harness(tmp_path).connect("127.0.0.1")
    c.read()
    assert "ETRN" not in " ".join(c.send(b"EHLO c.test\r\n"))
    assert c.send(b"ETRN example.com\r\n")[0].startswith("459 4.7.1")


def test_failing_flush_is_temporary(etrn):
    etrn.factory.etrn.fail = True
    c = etrn.connect("127.0.0.1")
    c.read()
    assert c.send(b"ETRN example.com\r\n")[0].startswith("458 4.3.0")
    assert c.codes(b"NOOP\r\n") == [250]
