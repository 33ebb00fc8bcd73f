"""The session's own commands: HELO/EHLO (and the extensions EHLO lists), RSET, NOOP, VRFY,
EXPN, HELP, QUIT (RFC 5321 4.1.1; NOOP and VRFY are required: pitfall 7)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING

from mxbackup import replies

if TYPE_CHECKING:
    from mxbackup.inbound.session import Session

_HELO_UNSAFE = re.compile(r"[^!-~]|[()\\]")


def safe_helo(helo: str) -> str:
    """A HELO argument as we may show it (in a reply, in the Received header)."""
    return _HELO_UNSAFE.sub("?", helo)[:255]


class BasicCommands:
    def __init__(self, session: Session) -> None:
        self.session = session

    def verbs(self) -> dict[str, Callable[[str], None]]:
        return {
            "HELO": self.helo,
            "EHLO": self.ehlo,
            "RSET": self.rset,
            "NOOP": self.noop,
            "VRFY": self.vrfy,
            "EXPN": self.expn,
            "HELP": self.help,
            "QUIT": self.quit,
        }

    def helo(self, rest: str) -> None:
        self._hello(rest, extended=False)

    def ehlo(self, rest: str) -> None:
        self._hello(rest, extended=True)

    def _hello(self, rest: str, extended: bool) -> None:
        s = self.session
        if not rest:
            s.error(replies.BAD_HELO.format("EHLO" if extended else "HELO"))
            return
        s.transaction = None
        s.helo = rest
        greeting = replies.HELO_OK.format(
            s.policy.server.hostname, f"{safe_helo(rest)} [{s.client_ip}]"
        )
        if extended:
            s.send_lines(250, [greeting.text, *self.extensions()])
        else:
            s.reply(greeting)

    def extensions(self) -> list[str]:
        s = self.session
        ext = [
            "PIPELINING",
            f"SIZE {s.policy.server.max_message_size}",
            "8BITMIME",
            "SMTPUTF8",
            "DSN",
            "CHUNKING",
            "ENHANCEDSTATUSCODES",
        ]
        if s.can_start_tls and not s.tls:
            ext.append("STARTTLS")
        if s.sasl.offered():
            ext.append("AUTH PLAIN LOGIN")
        if s.etrn.allowed():
            ext.append("ETRN")
        return ext

    def rset(self, rest: str) -> None:
        self.session.transaction = None
        self.session.reply(replies.RESET_OK)

    def noop(self, rest: str) -> None:
        self.session.reply(replies.NOOP_OK)

    def vrfy(self, rest: str) -> None:
        if not rest:
            self.session.error(replies.BAD_SYNTAX)
        else:
            self.session.reply(replies.VRFY_CANNOT)

    def expn(self, rest: str) -> None:
        self.session.error(replies.NOT_IMPLEMENTED)

    def help(self, rest: str) -> None:
        self.session.reply(replies.HELP)

    def quit(self, rest: str) -> None:
        self.session.close_with(replies.CLOSING)
