"""HELO/EHLO and the extensions (pitfall 7), RSET, NOOP, VRFY, EXPN, HELP, QUIT."""

from __future__ import annotations

from mxbackup.inbound.basic import safe_helo


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


def test_helo_is_one_line_and_names_the_client(h):
    c = h.connect()
    c.read()
    assert c.send(b"HELO c.test\r\n") == ["250 mx2.example.net Hello c.test [127.0.0.9]"]
    assert c.send(b"EHLO\r\n") == ["501 5.5.4 Syntax: EHLO hostname"]


def test_helo_and_rset_end_the_transaction(h):
    c = h.connect()
    c.read()
    for reset in (b"RSET\r\n", b"HELO c.test\r\n", b"EHLO c.test\r\n"):
        assert c.codes(b"MAIL FROM:<s@sender.test>\r\n") == [250]
        c.send(reset)
        assert c.send(b"RCPT TO:<u@example.com>\r\n") == ["503 5.5.1 Need MAIL before RCPT"]


def test_vrfy_expn_and_quit(h):
    c = h.connect()
    c.read()
    assert c.send(b"VRFY\r\n") == ["501 5.5.4 Syntax error in parameters or arguments"]
    assert c.send(b"EXPN staff\r\n") == ["502 5.5.1 Command not implemented"]
    assert c.send(b"QUIT\r\nNOOP\r\n") == ["221 2.0.0 Bye"]  # nothing read after QUIT
    assert c.transport.disconnecting


def test_safe_helo():
    assert safe_helo("ok.example") == "ok.example"
    assert safe_helo("a b(c)\\d\x7f") == "a?b?c??d?"
    assert len(safe_helo("x" * 300)) == 255


def test_help_lists_every_command_ehlo_can_advertise(h):
    """HELP names STARTTLS and AUTH (EHLO advertises them) and every other verb we act on."""
    from mxbackup import replies
    from mxbackup.inbound.server import command_table

    listed = set(replies.HELP.text.split("commands: ")[1].split())
    verbs = set(command_table(h.connect().proto)) - {"EXPN", "HELP"}  # EXPN: 502 always
    assert listed == verbs
