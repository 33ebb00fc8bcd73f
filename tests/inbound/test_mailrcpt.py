"""MAIL and RCPT: parameters, sequence, the recipient limit, refusals and their log lines."""

from __future__ import annotations

from inbound_case import MSG, final_codes

from helpers import Harness, base_config


def test_size_parameter(h):
    c = h.connect()
    c.read()
    assert c.send(b"MAIL FROM:<s@x.test> SIZE=99999999999\r\n")[0].startswith("552 5.3.4")
    assert c.send(b"MAIL FROM:<s@x.test> SIZE=abc\r\n")[0].startswith("501 5.5.4")
    assert c.send(b"MAIL FROM:<s@x.test> FOO=1\r\n")[0].startswith("555 5.5.4")
    assert c.codes(b"MAIL FROM:<s@x.test> SIZE=1000 BODY=8BITMIME\r\n") == [250]
    assert c.send(b"MAIL FROM:<s@x.test>\r\n")[0].startswith("503 5.5.1")


def test_sequence_errors(h):
    c = h.connect()
    c.read()
    assert c.send(b"RCPT TO:<u@example.com>\r\n")[0].startswith("503 5.5.1")
    assert c.send(b"DATA\r\n")[0].startswith("503 5.5.1")
    c.send(b"MAIL FROM:<>\r\n")
    assert c.send(b"DATA\r\n")[0].startswith("554 5.5.1")
    assert c.send(b"HELO\r\n")[0].startswith("501 5.5.4")


def test_recipients_beyond_the_limit_do_not_end_the_session(tmp_path):
    data = base_config(tmp_path, max_recipients=5)
    h = Harness(tmp_path, data)
    c = h.connect()
    c.read()
    rcpts = b"".join(b"RCPT TO:<u%d@example.com>\r\n" % i for i in range(30))
    lines = c.send(b"EHLO c.test\r\nMAIL FROM:<s@sender.test>\r\n" + rcpts + b"DATA\r\n")
    codes = final_codes(lines)
    assert codes[2:7] == [250] * 5 and codes[7:32] == [452] * 25 and codes[-1] == 354
    assert final_codes(c.send(MSG)) == [250]
