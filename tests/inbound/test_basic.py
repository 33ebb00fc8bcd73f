"""HELO/EHLO and the extensions (pitfall 7), RSET, NOOP, VRFY, EXPN, HELP, QUIT."""

from __future__ import annotations


def test_ehlo_extensions_and_basic_commands(h):
    c = h.connect()
    greeting = c.read()
    assert greeting == ["220 mx2.example.net ESMTP mxbackup"]
    ehlo = c.send(b"EHLO c.test\r\n")
    assert ehlo[0].startswith("250-mx2.example.net Hello c.test")
    assert {"250-PIPELINING", "250-SIZE 26214400", "250-8BITMIME"} <= set(ehlo)
    assert ehlo[-1] == "250 ENHANCEDSTATUSCODES"
    assert c.send(b"NOOP\r\n") == ["250 2.0.0 Ok"]
    assert c.send(b"VRFY someone\r\n")[0].startswith("252 2.1.5")
    assert c.send(b"HELP\r\n")[0].startswith("214 2.0.0")
    assert c.send(b"RSET\r\n")[0].startswith("250 2.0.0")
    assert c.send(b"FROB\r\n")[0].startswith("500 5.5.2")
    assert c.send(b"QUIT\r\n") == ["221 2.0.0 Bye"]


def test_helo_argument_echo_is_sanitised(h):
    c = h.connect()
    c.read()
    line = c.send(b"EHLO h(e)l\\lo\x01\x7f\r\n")[0]
    assert line == "250-mx2.example.net Hello h?e?l?lo?? [127.0.0.9]"
