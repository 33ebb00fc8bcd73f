"""Every SMTP reply mxbackup sends, named, each with its RFC 3463 enhanced status code.

Pure: no reactor.  ``Reply.line()`` renders a reply; multi-line replies are built by the
protocol from ``code`` and ``text``.  ``tests/test_replies.py`` checks that every enhanced code's
class agrees with its basic code (2xx -> 2.x.x, 4xx -> 4.x.x, 5xx -> 5.x.x).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# RFC 5321 4.2: textstring = 1*(%d09 / %d32-126).  What a client sent is echoed only in this
# form, so no control character (terminal escapes, NUL, CR/LF) ever goes back on the wire.
_NOT_TEXT = re.compile(r"[^\t\x20-\x7e]")


def printable(value: object) -> str:
    """``value`` as reply text: anything outside HT and printable US-ASCII becomes ``?``."""
    return _NOT_TEXT.sub("?", str(value))


@dataclass(frozen=True)
class Reply:
    code: int
    status: str  # enhanced status code, e.g. "5.7.1"; "" only for 220/221/235/334/354 etc.
    text: str

    def format(self, *args: object) -> Reply:
        """Fill in the placeholders; every argument is made printable (it may be the client's)."""
        return Reply(self.code, self.status, self.text.format(*(printable(a) for a in args)))

    @property
    def message(self) -> str:
        """The text after the code: enhanced status first, as Twisted's ``resp`` expects."""
        return f"{self.status} {self.text}" if self.status else self.text

    def line(self) -> bytes:
        return f"{self.code} {self.message}".encode("utf-8", "replace")

    def __str__(self) -> str:
        return f"{self.code} {self.message}"


# Connection
GREETING = Reply(220, "", "{} ESMTP mxbackup")
CLOSING = Reply(221, "2.0.0", "Bye")
TOO_MANY_CONNECTIONS = Reply(421, "4.7.0", "Too many connections, try again later")
TOO_MANY_FROM_IP = Reply(421, "4.7.0", "Too many connections from your address, try again later")
IDLE_TIMEOUT = Reply(421, "4.4.2", "Idle timeout, closing connection")
TOO_MANY_ERRORS = Reply(421, "4.7.0", "Too many errors, closing connection")

# Session
HELO_OK = Reply(250, "", "{} Hello {}")  # no enhanced code in the HELO/EHLO greeting (RFC 2034)
RESET_OK = Reply(250, "2.0.0", "Reset state")
NOOP_OK = Reply(250, "2.0.0", "Ok")
VRFY_CANNOT = Reply(252, "2.1.5", "Cannot VRFY user, but will accept message and attempt delivery")
HELP = Reply(
    214,
    "2.0.0",
    "See RFC 5321; commands: EHLO HELO STARTTLS AUTH MAIL RCPT DATA BDAT RSET NOOP VRFY ETRN QUIT",
)
SENDER_OK = Reply(250, "2.1.0", "Sender ok")
RECIPIENT_OK = Reply(250, "2.1.5", "Recipient ok")
START_DATA = Reply(354, "", "End data with <CR><LF>.<CR><LF>")
QUEUED = Reply(250, "2.0.0", "Ok: queued as {}")
START_TLS = Reply(220, "2.0.0", "Ready to start TLS")
AUTH_OK = Reply(235, "2.7.0", "Authentication successful")

# Syntax and sequence errors
LINE_TOO_LONG = Reply(500, "5.5.2", "Line too long (limit 512 octets for commands)")
UNRECOGNIZED = Reply(500, "5.5.2", "Command not recognized")
BAD_SYNTAX = Reply(501, "5.5.4", "Syntax error in parameters or arguments")
BAD_HELO = Reply(501, "5.5.4", "Syntax: {} hostname")
BAD_MAIL_SYNTAX = Reply(501, "5.5.4", "Syntax: MAIL FROM:<address> [parameters]")
BAD_RCPT_SYNTAX = Reply(501, "5.5.4", "Syntax: RCPT TO:<address> [parameters]")
BAD_ADDRESS = Reply(553, "5.1.3", "Bad address syntax: {}")
BAD_SENDER_ADDRESS = Reply(553, "5.1.7", "Bad sender address syntax: {}")
UNKNOWN_PARAMETER = Reply(555, "5.5.4", "Unsupported parameter: {}")
BAD_PARAMETER = Reply(501, "5.5.4", "Bad value for parameter: {}")
NOT_IMPLEMENTED = Reply(502, "5.5.1", "Command not implemented")
NESTED_MAIL = Reply(503, "5.5.1", "Sender already specified")
NEED_MAIL = Reply(503, "5.5.1", "Need MAIL before RCPT")
NEED_MAIL_FOR_DATA = Reply(503, "5.5.1", "Need MAIL before DATA")
NO_VALID_RCPT = Reply(554, "5.5.1", "No valid recipients")
DATA_ARGUMENT = Reply(501, "5.5.4", "DATA takes no argument")
TLS_ALREADY = Reply(503, "5.5.1", "TLS already active")
TLS_UNAVAILABLE = Reply(454, "4.7.0", "TLS not available")
TLS_IN_TRANSACTION = Reply(503, "5.5.1", "STARTTLS not allowed during a mail transaction")
BAD_8BIT_COMMAND = Reply(500, "5.5.2", "Non-ASCII characters in command")
BARE_NEWLINE_COMMAND = Reply(500, "5.5.2", "Bare CR in command; lines end with CRLF")

# Authentication (RFC 4954)
AUTH_CHALLENGE = Reply(334, "", "{}")
AUTH_NOT_AVAILABLE = Reply(502, "5.5.1", "AUTH not available")
AUTH_NEEDS_TLS = Reply(538, "5.7.11", "Encryption required for requested authentication mechanism")
AUTH_ALREADY = Reply(503, "5.5.1", "Already authenticated")
AUTH_IN_TRANSACTION = Reply(503, "5.5.1", "AUTH not allowed during a mail transaction")
AUTH_MECHANISM = Reply(504, "5.5.4", "Unrecognized authentication mechanism")
AUTH_ABORTED = Reply(501, "5.7.0", "Authentication aborted")
AUTH_BAD_BASE64 = Reply(501, "5.5.2", "Cannot decode response")
AUTH_MALFORMED = Reply(501, "5.5.2", "Malformed authentication response")
AUTH_FAILED = Reply(535, "5.7.8", "Authentication credentials invalid")
AUTH_REQUIRED = Reply(530, "5.7.0", "Authentication required")
AUTH_TOO_MANY_FAILURES = Reply(
    454, "4.7.0", "Too many failed authentications from your address; try again later"
)

# Policy
RELAY_DENIED = Reply(550, "5.7.1", "Relay access denied: {}")
DELIVERY_NOT_ALLOWED = Reply(550, "5.7.1", "Delivery is not allowed to this address")
ROUTING_IN_ADDRESS = Reply(550, "5.7.1", "Address carries its own routing: {}")
UNKNOWN_USER = Reply(550, "5.1.1", "Recipient address rejected: user unknown in route list: {}")
UTF8_NEEDS_SMTPUTF8 = Reply(553, "5.6.7", "Non-ASCII address requires SMTPUTF8")
TOO_MANY_RECIPIENTS = Reply(452, "4.5.3", "Too many recipients")
# Recipient verification and per-route policy (issue 11)
VERIFY_REFUSED = Reply(550, "5.1.1", "Recipient address rejected by the primary: {}")
VERIFY_UNAVAILABLE = Reply(450, "4.4.3", "Recipient address cannot be verified now: {}")
USE_PRIMARY = Reply(450, "4.7.1", "The primary mail server for {} is up: deliver there")
ROUTE_QUEUE_FULL = Reply(452, "4.3.1", "Too much mail queued for {}, try again later")

# Checks (checks: in the configuration)
DNSBL_LISTED = Reply(554, "5.7.1", "Service unavailable; client [{}] blocked using {}{}")
SPF_FAIL = Reply(550, "5.7.23", "SPF check failed for {}: {}")
GREYLISTED = Reply(450, "4.7.1", "Greylisted, please try again later")

# ETRN (RFC 1985)
ETRN_NOTHING = Reply(251, "2.0.0", "No messages waiting for node {}")
ETRN_STARTED_COUNT = Reply(253, "2.0.0", "{} pending messages for node {} started")
ETRN_UNABLE = Reply(458, "4.3.0", "Unable to queue messages for node {}")
ETRN_NOT_ALLOWED = Reply(459, "4.7.1", "Node {} not allowed: {}")
ETRN_SYNTAX = Reply(501, "5.5.4", "Syntax: ETRN domain | @domain | #queue")
ETRN_IN_TRANSACTION = Reply(503, "5.5.1", "ETRN not allowed during a mail transaction")

# Size, space, content
SIZE_DECLARED_TOO_BIG = Reply(552, "5.3.4", "Message size exceeds fixed limit of {} octets")
MESSAGE_TOO_BIG = Reply(552, "5.3.4", "Message size exceeds fixed limit of {} octets")
INSUFFICIENT_SPACE = Reply(452, "4.3.1", "Insufficient system storage")
TOO_MANY_HOPS = Reply(554, "5.4.0", "Too many Received headers ({}): mail loop?")
TEXT_LINE_TOO_LONG = Reply(500, "5.5.2", "Message has a line longer than 998 octets plus CRLF")
BARE_NEWLINE = Reply(554, "5.6.0", "Message contains a bare CR or LF; lines must end with CRLF")

# Local failures: always 4xx, the client keeps the message and retries
LOCAL_ERROR = Reply(451, "4.3.0", "Local error in processing, try again later")
QUEUE_WRITE_ERROR = Reply(451, "4.3.0", "Could not write message to the queue, try again later")

# SMTPUTF8, DSN, CHUNKING (RFC 6531, 3461, 3030)
REPEATED_PARAMETER = Reply(501, "5.5.4", "Parameter given more than once: {}")
BAD_XTEXT = Reply(501, "5.5.4", "Bad xtext in parameter: {}")
PARAMETER_TOO_LONG = Reply(501, "5.5.4", "Parameter too long: {} (limit {} characters)")
NOTIFY_NEVER_COMBINED = Reply(501, "5.5.4", "NOTIFY=NEVER cannot be combined with other values")
BAD_BDAT_SYNTAX = Reply(501, "5.5.4", "Syntax: BDAT chunk-size [LAST]")
NEED_MAIL_FOR_BDAT = Reply(503, "5.5.1", "Need MAIL before BDAT")
DATA_AFTER_BDAT = Reply(503, "5.5.1", "DATA not allowed after BDAT in the same transaction")
RCPT_AFTER_BDAT = Reply(503, "5.5.1", "RCPT not allowed after BDAT")
CHUNK_RECEIVED = Reply(250, "2.0.0", "{} octets received")

ALL: tuple[Reply, ...] = tuple(v for v in globals().values() if isinstance(v, Reply))
