"""MAIL and RCPT: parameters, sequence, the recipient limit, refusals and their log lines."""

from __future__ import annotations

import pytest
from inbound_case import MSG, final_codes
from twisted.logger import formatEvent, globalLogPublisher

from helpers import Harness, base_config
from mxbackup import replies
from mxbackup.inbound.address import PathError
from mxbackup.inbound.mailrcpt import path_refusal


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


@pytest.fixture
def events():
    seen: list[str] = []

    def observer(event):
        if event.get("log_namespace") == "mxbackup.smtp_in":
            seen.append(formatEvent(event))

    globalLogPublisher.addObserver(observer)
    yield seen
    globalLogPublisher.removeObserver(observer)


def test_refused_recipient_log_line_and_stats(h, events):
    c = h.connect()
    c.send(b"EHLO c.test\r\nMAIL FROM:<s@sender.test>\r\n")
    assert c.send(b"RCPT TO:<x@Elsewhere.test>\r\n") == [
        "550 5.7.1 Relay access denied: elsewhere.test"
    ]
    assert events[-1] == (
        "refused rcpt=<x@elsewhere.test> from=<s@sender.test> client=127.0.0.9 code=550 "
        "reason=5.7.1 Relay access denied: elsewhere.test"
    )
    assert h.factory.stats.refused["550"] == 1


def test_address_with_routing_is_logged_as_sent(h, events):
    c = h.connect()
    c.send(b"MAIL FROM:<>\r\n")
    assert c.send(b"RCPT TO:<@A.test:u@Example.com>\r\n") == [
        "550 5.7.1 Address carries its own routing: source route"
    ]
    assert events[-1].startswith("refused rcpt=<@A.test:u@Example.com> from=<> client=")


def test_syntax_refusals(h, events):
    c = h.connect()
    c.read()
    assert c.send(b"MAIL FROM:<s@x.test.>\r\n")[0].startswith("553 5.1.7 Bad sender address")
    assert c.send("MAIL FROM:<j\u00fcrgen@x.test>\r\n".encode()) == [
        "553 5.6.7 Non-ASCII address requires SMTPUTF8"
    ]
    assert c.send(b"MAIL TO:<s@x.test>\r\n")[0].startswith("501 5.5.4 Syntax: MAIL")
    assert c.codes(b"MAIL FROM:<>\r\n") == [250]
    assert c.send(b"RCPT FROM:<u@example.com>\r\n")[0].startswith("501 5.5.4 Syntax: RCPT")
    assert c.send(b"RCPT TO:<u@example.com> FOO=NEVER\r\n") == [
        "555 5.5.4 Unsupported parameter: FOO"
    ]
    assert c.send(b"RCPT TO:<u@example.com.>\r\n")[0].startswith("553 5.1.3 Bad address syntax")
    assert "refused rcpt=<u@example.com.> from=<> client=127.0.0.9 code=553" in events[-1]


def test_repeated_recipient_is_queued_once(h):
    c = h.connect()
    rcpts = b"RCPT TO:<u@example.com>\r\nRCPT TO:<U@EXAMPLE.com>\r\n"
    c.send(b"MAIL FROM:<s@sender.test>\r\n" + rcpts + b"DATA\r\n")
    assert final_codes(c.send(MSG)) == [250]
    (env,) = h.woken
    assert [r.address for r in env.recipients] == ["u@example.com"]


def test_recipients_beyond_the_limit_are_not_logged_as_refused(tmp_path, events):
    h = Harness(tmp_path, base_config(tmp_path, max_recipients=1))
    c = h.connect()
    c.send(b"MAIL FROM:<s@sender.test>\r\nRCPT TO:<a@example.com>\r\n")
    assert c.send(b"RCPT TO:<b@example.com>\r\n") == ["452 4.5.3 Too many recipients"]
    assert not [e for e in events if e.startswith("refused")]


def test_path_refusal():
    assert path_refusal(PathError("x", "utf8"), replies.BAD_ADDRESS) == replies.UTF8_NEEDS_SMTPUTF8
    assert path_refusal(PathError("bad domain"), replies.BAD_ADDRESS).text == (
        "Bad address syntax: bad domain"
    )


# -- SMTPUTF8 and DSN on the session ---------------------------------------------------------
def utf8_harness(tmp_path):
    data = base_config(tmp_path)
    data["routes"] += [
        {"domain": "bücher.example", "target_host": "127.0.0.1", "port": 9},
        {
            "domain": "xn--strae-oqa.example",
            "target_host": "127.0.0.1",
            "port": 9,
            "addresses": ["jürgen@straße.example"],
        },
    ]
    return Harness(tmp_path, data)


def test_utf8_transaction_is_queued_with_its_flag_and_addresses_as_sent(tmp_path):
    h = utf8_harness(tmp_path)
    c = h.connect()
    c.read()
    lines = c.send(
        "EHLO c.test\r\nMAIL FROM:<Jürgen@Bücher.example> SMTPUTF8\r\n"
        "RCPT TO:<ü@bücher.example>\r\nRCPT TO:<a@XN--BCHER-KVA.example>\r\n"
        "RCPT TO:<JÜRGEN@xn--strae-oqa.example>\r\nRCPT TO:<jürgen@strasse.example>\r\n"
        "RCPT TO:<x@straße.example>\r\nDATA\r\n".encode()
    )
    assert "250-SMTPUTF8" in lines
    assert final_codes(lines)[1:] == [250, 250, 250, 250, 550, 550, 354]
    assert lines[-3].startswith("550 5.7.1 Relay access denied: strasse.example")
    assert lines[-2].startswith("550 5.1.1")  # not on the route's list
    assert final_codes(c.send(MSG)) == [250]
    (env,) = h.woken
    assert env.params == {"SMTPUTF8": None}
    assert env.sender == "Jürgen@bücher.example"
    assert [(r.address, r.route) for r in env.recipients] == [
        ("ü@bücher.example", "xn--bcher-kva.example"),
        ("a@xn--bcher-kva.example", "xn--bcher-kva.example"),
        ("JÜRGEN@xn--strae-oqa.example", "xn--strae-oqa.example"),
    ]


def test_utf8_routing_tricks_and_bad_utf8_on_the_session(tmp_path):
    h = utf8_harness(tmp_path)
    c = h.connect()
    c.send(b"EHLO c.test\r\nMAIL FROM:<> SMTPUTF8\r\n")
    for rcpt in ("u＠evil.test", "u％evil.test", "evil.test！u", '"ü@evil.test"', "ü%evil.test"):
        line = c.send(f"RCPT TO:<{rcpt}@bücher.example>\r\n".encode())
        assert line[0].startswith("550 5.7.1 Address carries its own routing"), rcpt
    assert c.send(b"RCPT TO:<\xc3\x28@example.com>\r\n")[0].startswith("553 5.1.3")
    assert c.send(b"RCPT TO:<u@\xff.example>\r\n")[0].startswith("553 5.1.3")
    assert c.send(b"RCPT TO:<u\xe2\x80\xae@example.com>\r\n")[0].startswith("553 5.1.3")
    assert c.send(b"MAIL FROM:<\xc3@x.test> SMTPUTF8\r\n")[0].startswith("503 5.5.1")
    c.send(b"RSET\r\n")
    assert c.send(b"MAIL FROM:<\xc3@x.test> SMTPUTF8\r\n")[0].startswith("553 5.1.7")
    assert c.send(b"MAIL FROM:<\xc3\xbc@x.test> SMTPUTF8=1\r\n")[0].startswith("501 5.5.4")
    # Without SMTPUTF8, any non-ASCII address is 553 5.6.7, valid UTF-8 or not.
    c.send(b"RSET\r\nMAIL FROM:<>\r\n")
    assert c.send("RCPT TO:<ü@bücher.example>\r\n".encode())[0].startswith("553 5.6.7")
    assert c.send(b"RCPT TO:<\xff@example.com>\r\n")[0].startswith("553 5.6.7")
    assert c.send(b"EHLO \xc3\xbc.test\r\n")[0].startswith("500 5.5.2")


def test_dsn_parameters_are_kept_in_the_envelope(h):
    c = h.connect()
    c.send(
        b"EHLO c.test\r\nMAIL FROM:<s@sender.test> RET=hdrs ENVID=QQ+2B1 BODY=8BITMIME\r\n"
        b"RCPT TO:<a@example.com> NOTIFY=delay,success ORCPT=rfc822;a+40example.com\r\n"
        b"RCPT TO:<b@example.com> NOTIFY=NEVER\r\nRCPT TO:<c@example.com>\r\nDATA\r\n"
    )
    assert final_codes(c.send(MSG)) == [250]
    (env,) = h.woken
    assert env.params == {"RET": "HDRS", "ENVID": "QQ+2B1", "BODY": "8BITMIME"}
    assert [r.params for r in env.recipients] == [
        {"NOTIFY": "SUCCESS,DELAY", "ORCPT": "rfc822;a+40example.com"},
        {"NOTIFY": "NEVER"},
        {},
    ]


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (
            b"MAIL FROM:<s@x.test> RET=FULL RET=HDRS",
            "501 5.5.4 Parameter given more than once: RET",
        ),
        (b"MAIL FROM:<s@x.test> ENVID=a+zz", "501 5.5.4 Bad xtext in parameter: ENVID"),
        (b"MAIL FROM:<s@x.test> ENVID=" + b"x" * 101, "501 5.5.4 Parameter too long: ENVID"),
        (b"MAIL FROM:<s@x.test> RET=NONE", "501 5.5.4 Bad value for parameter: RET"),
        (b"MAIL FROM:<s@x.test> MT-PRIORITY=3", "555 5.5.4 Unsupported parameter: MT-PRIORITY"),
    ],
)
def test_bad_dsn_parameters_on_mail(h, command, expected):
    c = h.connect()
    c.read()
    assert c.send(command + b"\r\n")[0].startswith(expected)


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        (b"NOTIFY=NEVER,DELAY", "501 5.5.4 NOTIFY=NEVER cannot be combined"),
        (b"NOTIFY=SUCCESS NOTIFY=DELAY", "501 5.5.4 Parameter given more than once: NOTIFY"),
        (b"NOTIFY=SOMETIMES", "501 5.5.4 Bad value for parameter: NOTIFY"),
        (b"ORCPT=u@x.test", "501 5.5.4 Bad value for parameter: ORCPT"),
        (b"ORCPT=rfc822;u+4", "501 5.5.4 Bad xtext in parameter: ORCPT"),
        (b"ORCPT=rfc822;" + b"x" * 494, "501 5.5.4 Parameter too long: ORCPT"),
        (b"ORCPT=rfc822;a ORCPT=rfc822;b", "501 5.5.4 Parameter given more than once: ORCPT"),
        (b"XYZ=1", "555 5.5.4 Unsupported parameter: XYZ"),
    ],
)
def test_bad_dsn_parameters_on_rcpt(h, params, expected):
    c = h.connect()
    c.send(b"MAIL FROM:<s@x.test>\r\n")
    assert c.send(b"RCPT TO:<u@example.com> " + params + b"\r\n")[0].startswith(expected)
    assert c.codes(b"RCPT TO:<u@example.com> NOTIFY=FAILURE\r\n") == [250]


def test_a_mailbox_in_u_labels_and_a_labels_is_one_recipient(tmp_path):
    """Regression (issue 13): ``ü@bücher.example`` and ``ü@xn--bcher-kva.example`` were kept
    twice, and delivered twice.  Repeats are compared without case, the domain in its lookup
    form (A-labels); the first spelling is kept."""
    h = utf8_harness(tmp_path)
    c = h.connect()
    c.read()
    lines = c.send(
        "EHLO c.test\r\nMAIL FROM:<s@sender.test> SMTPUTF8\r\n"
        "RCPT TO:<ü@bücher.example>\r\nRCPT TO:<ü@xn--bcher-kva.example>\r\n"
        "RCPT TO:<Ü@BÜCHER.example>\r\nRCPT TO:<v@bücher.example>\r\nDATA\r\n".encode()
    )
    assert final_codes(lines)[1:] == [250, 250, 250, 250, 250, 354]
    assert final_codes(c.send(MSG)) == [250]
    (env,) = h.woken
    assert [r.address for r in env.recipients] == ["ü@bücher.example", "v@bücher.example"]
