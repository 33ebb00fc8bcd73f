"""A scripted SMTP server playing the "primary" for outbound delivery tests.

Real sockets on 127.0.0.1: ``start(reactor, ...)`` listens on an ephemeral port (plain, or
implicit TLS), answers what the test told it to (greeting, EHLO extensions, per-recipient RCPT
replies, MAIL and DATA overrides, a connection dropped after N bytes of DATA, STARTTLS, AUTH
PLAIN/LOGIN) and records every session and transaction.  ``stop()`` closes the listening port
and every open connection and waits for them to go, so trial finds a clean reactor.

Also a throw-away CA and server certificates signed by it (``TestCA``), for verification tests.
"""

from __future__ import annotations

import base64
import datetime
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from OpenSSL import SSL
from twisted.internet import defer, protocol
from twisted.internet.interfaces import IOpenSSLContextFactory, ISSLTransport
from twisted.protocols import basic
from zope.interface import implementer

# -- certificates ----------------------------------------------------------------------------


class TestCA:
    """A tiny certificate authority: ``ca_file`` for the client, server contexts it signs."""

    __test__ = False  # not a pytest test class

    def __init__(self, directory: Path, name: str = "mxbackup test CA") -> None:
        self.directory = directory
        self.key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False
            )
            .sign(self.key, hashes.SHA256())
        )
        self.ca_file = directory / "ca.pem"
        self.ca_file.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, hostname: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        """A server certificate for ``hostname`` signed by this CA, and its key."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(hostname)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
            .sign(self.key, hashes.SHA256())
        )
        return cert, key

    def server_context(self, hostname: str) -> ServerContext:
        """Server-side TLS presenting a certificate for ``hostname``."""
        return ServerContext(*self.issue(hostname))


@implementer(IOpenSSLContextFactory)
class ServerContext:
    """A server context factory from ``cryptography`` objects (Twisted's CertificateOptions
    hands pyOpenSSL X509 objects to pyOpenSSL, which now warns about it)."""

    def __init__(self, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
        self._context = SSL.Context(SSL.TLS_METHOD)
        self._context.set_min_proto_version(SSL.TLS1_2_VERSION)
        self._context.use_certificate(cert)
        self._context.use_privatekey(key)
        self._context.check_privatekey()

    def getContext(self) -> SSL.Context:
        return self._context


# -- the server ------------------------------------------------------------------------------


@dataclass
class Transaction:
    """One MAIL .. DATA transaction as the primary saw it."""

    helo: bytes
    mail: bytes  # the whole MAIL command line, parameters included
    rcpts: list[bytes] = field(default_factory=list)  # accepted recipients only
    raw: bytes = b""  # DATA as received, dot-stuffed, without the final ".\r\n"
    message: bytes = b""  # unstuffed
    complete: bool = False  # the final "." arrived
    tls: bool = False
    auth: bytes | None = None  # the authenticated user, if any
    connection: int = 0  # which connection (1-based) carried it


@dataclass
class Session:
    """One connection: every command line, TLS and AUTH state."""

    number: int
    commands: list[bytes] = field(default_factory=list)
    packets: list[bytes] = field(default_factory=list)  # what each read brought, outside DATA
    tls: bool = False
    auth: bytes | None = None
    auth_attempts: list[tuple[bytes, bytes, bytes]] = field(default_factory=list)  # mech, u, p


def unstuff(raw: bytes) -> bytes:
    lines = raw.split(b"\r\n")
    return b"\r\n".join(line[1:] if line.startswith(b".") else line for line in lines)


class FakePrimaryProtocol(basic.LineReceiver):
    delimiter = b"\r\n"
    MAX_LENGTH = 1 << 20
    factory: FakePrimary

    def connectionMade(self) -> None:
        f = self.factory
        f.connections += 1
        f.open.add(self)
        self.lost: defer.Deferred = defer.Deferred()
        self.session = Session(f.connections, tls=ISSLTransport.providedBy(self.transport))
        f.sessions.append(self.session)
        self._reset_state()
        self._auth: tuple[bytes, list[bytes]] | None = None  # mechanism, collected answers
        self._data = b""
        self._in_data = False
        if f.greeting is not None:
            code, text = f.greeting
            self.reply(code, text)
            if code >= 400:
                self.transport.loseConnection()

    def connectionLost(self, reason: Any = None) -> None:
        self.factory.open.discard(self)
        self.lost.callback(None)

    def _reset_state(self) -> None:
        self.helo: bytes | None = None
        self._reset_transaction()

    def _reset_transaction(self) -> None:
        self.txn: Transaction | None = None

    def reply(self, code: int, text: str | bytes, more: list[bytes] = ()) -> None:
        if isinstance(text, str):
            text = text.encode()
        lines = [text, *more]
        for line in lines[:-1]:
            self.transport.write(b"%d-%s\r\n" % (code, line))
        self.transport.write(b"%d %s\r\n" % (code, lines[-1]))

    def dataReceived(self, data: bytes) -> None:
        if not self._in_data_mode():
            self.session.packets.append(data)
        super().dataReceived(data)

    def _in_data_mode(self) -> bool:
        return self.line_mode == 0

    # -- commands ----------------------------------------------------------------------------
    def lineReceived(self, line: bytes) -> None:
        self.session.commands.append(line)
        if self._auth is not None:
            self._auth_step(line)
            return
        verb, _, arg = line.partition(b" ")
        handler = getattr(self, "smtp_" + verb.upper().decode("ascii", "replace"), None)
        if handler is None:
            self.reply(500, "5.5.2 command not recognized")
        else:
            handler(arg)

    def smtp_EHLO(self, arg: bytes) -> None:
        f = self.factory
        self.helo = arg
        self._reset_transaction()
        ext = list(f.extensions)
        if f.tls_context is not None and not self.session.tls:
            ext.append(b"STARTTLS")
        if f.credentials is not None and f.auth_mechanisms:
            ext.append(b"AUTH " + b" ".join(m.encode() for m in f.auth_mechanisms))
        self.reply(250, f.hostname, ext)

    def smtp_HELO(self, arg: bytes) -> None:
        self.helo = arg
        self._reset_transaction()
        self.reply(250, self.factory.hostname)

    def smtp_STARTTLS(self, arg: bytes) -> None:
        ctx = self.factory.tls_context
        if ctx is None or self.session.tls:
            self.reply(454, "4.7.0 TLS not available")
            return
        self.reply(220, "2.0.0 go ahead")
        self.transport.startTLS(ctx)
        self.session.tls = True
        self._reset_state()  # RFC 3207: forget everything learnt before

    def smtp_AUTH(self, arg: bytes) -> None:
        f = self.factory
        mech, _, initial = arg.partition(b" ")
        mech = mech.upper()
        if f.credentials is None or mech.decode() not in f.auth_mechanisms:
            self.reply(504, "5.5.4 mechanism not available")
            return
        if self.session.auth is not None:
            self.reply(503, "5.5.1 already authenticated")
            return
        self._auth = (mech, [])
        if initial:
            self._auth_step(initial)
        elif mech == b"PLAIN":
            self.reply(334, b"")
        else:
            self.reply(334, base64.b64encode(b"Username:"))

    def _auth_step(self, line: bytes) -> None:
        assert self._auth is not None
        mech, answers = self._auth
        if line == b"*":
            self._auth = None
            self.reply(501, "5.7.0 authentication cancelled")
            return
        try:
            answers.append(base64.b64decode(line, validate=True))
        except ValueError:
            self._auth = None
            self.reply(501, "5.5.2 bad base64")
            return
        if mech == b"PLAIN":
            parts = answers[0].split(b"\0")
            if len(parts) != 3:
                self._auth = None
                self.reply(501, "5.5.2 malformed")
                return
            authzid, user, password = parts
            if authzid not in (b"", user):
                user = b""  # proxy authorization: refused
        elif len(answers) == 1:
            self.reply(334, base64.b64encode(b"Password:"))
            return
        else:
            user, password = answers
        self._auth = None
        self.session.auth_attempts.append((mech, user, password))
        creds = self.factory.credentials or {}
        if user and creds.get(user) == password:
            self.session.auth = user
            self.reply(235, "2.7.0 authentication successful")
        else:
            self.reply(535, "5.7.8 authentication credentials invalid")

    def smtp_MAIL(self, arg: bytes) -> None:
        f = self.factory
        if self.helo is None:
            self.reply(503, "5.5.1 EHLO first")
            return
        if self.txn is not None:
            self.reply(503, "5.5.1 nested MAIL")
            return
        if f.mail_reply is not None:
            self.reply(*f.mail_reply)
            if f.mail_reply[0] >= 300:
                return
        else:
            self.reply(250, "2.1.0 sender ok")
        self.txn = Transaction(
            helo=self.helo,
            mail=b"MAIL " + arg,
            tls=self.session.tls,
            auth=self.session.auth,
            connection=self.session.number,
        )

    def smtp_RCPT(self, arg: bytes) -> None:
        if self.txn is None:
            self.reply(503, "5.5.1 MAIL first")
            return
        start, end = arg.find(b"<"), arg.find(b">")
        address = arg[start + 1 : end].decode()
        code, text = self.factory.rcpt_replies.get(address, (250, "2.1.5 recipient ok"))
        if 200 <= code < 300:
            self.txn.rcpts.append(address.encode())
        self.reply(code, text)

    def smtp_DATA(self, arg: bytes) -> None:
        if self.txn is None or not self.txn.rcpts:
            self.reply(503, "5.5.1 no valid recipients")
            return
        self.factory.transactions.append(self.txn)
        self._data = b""
        self.reply(354, "end data with <CR><LF>.<CR><LF>")
        self.setRawMode()

    def smtp_RSET(self, arg: bytes) -> None:
        self._reset_transaction()
        self.reply(250, "2.0.0 ok")

    def smtp_NOOP(self, arg: bytes) -> None:
        self.reply(250, "2.0.0 ok")

    def smtp_QUIT(self, arg: bytes) -> None:
        self.reply(221, "2.0.0 bye")
        self.transport.loseConnection()

    # -- DATA --------------------------------------------------------------------------------
    def rawDataReceived(self, data: bytes) -> None:
        f = self.factory
        txn = self.txn
        assert txn is not None
        self._data += data
        if f.drop_after_data_bytes is not None and len(self._data) >= f.drop_after_data_bytes:
            txn.raw = self._data[: f.drop_after_data_bytes]
            txn.message = unstuff(txn.raw)
            self.transport.abortConnection()
            return
        if self._data.startswith(b".\r\n"):
            end, rest = 0, self._data[3:]
        else:
            i = self._data.find(b"\r\n.\r\n")
            if i < 0:
                return
            end, rest = i + 2, self._data[i + 5 :]
        txn.raw = self._data[:end]
        txn.message = unstuff(txn.raw)
        txn.complete = True
        self._data = b""
        self._reset_transaction()
        if f.data_reply is not None:
            self.reply(*f.data_reply)
        else:
            self.reply(250, f"2.0.0 queued as FAKE{len(f.transactions)}")
        self.setLineMode(rest)


class FakePrimary(protocol.ServerFactory):
    protocol = FakePrimaryProtocol

    def __init__(
        self,
        *,
        greeting: tuple[int, str] | None = (220, "mx.primary.test ESMTP fake"),
        hostname: str = "mx.primary.test",
        pipelining: bool = True,
        size: int | None = 10_000_000,
        eight_bit: bool = True,
        tls_context: Any = None,
        credentials: dict[bytes, bytes] | None = None,
        auth_mechanisms: tuple[str, ...] = ("PLAIN", "LOGIN"),
        rcpt_replies: dict[str, tuple[int, str]] | None = None,
        mail_reply: tuple[int, str] | None = None,
        data_reply: tuple[int, str] | None = None,
        drop_after_data_bytes: int | None = None,
    ) -> None:
        """``greeting`` None: never say anything (for timeouts).  ``size`` None: no SIZE."""
        self.greeting = greeting
        self.hostname = hostname
        self.extensions: list[bytes] = []
        if pipelining:
            self.extensions.append(b"PIPELINING")
        if size is not None:
            self.extensions.append(b"SIZE %d" % size)
        if eight_bit:
            self.extensions.append(b"8BITMIME")
        self.tls_context = tls_context
        self.credentials = credentials
        self.auth_mechanisms = auth_mechanisms
        self.rcpt_replies = rcpt_replies or {}
        self.mail_reply = mail_reply
        self.data_reply = data_reply
        self.drop_after_data_bytes = drop_after_data_bytes
        self.connections = 0
        self.sessions: list[Session] = []
        self.transactions: list[Transaction] = []
        self.open: set[FakePrimaryProtocol] = set()
        self.port: Any = None

    @property
    def portnum(self) -> int:
        return self.port.getHost().port

    def commands(self) -> list[bytes]:
        """Every command line of every session, in order."""
        return [c for s in self.sessions for c in s.commands]

    @property
    def complete(self) -> list[Transaction]:
        return [t for t in self.transactions if t.complete]

    def listen(self, reactor: Any, implicit_tls: Any = None) -> FakePrimary:
        """Listen on an ephemeral 127.0.0.1 port; ``implicit_tls``: a server TLS context."""
        if implicit_tls is not None:
            self.port = reactor.listenSSL(0, self, implicit_tls, interface="127.0.0.1")
        else:
            self.port = reactor.listenTCP(0, self, interface="127.0.0.1")
        return self

    def stop(self) -> defer.Deferred:
        """Stop listening, close what is still open, fire when everything is gone."""
        waits = [defer.maybeDeferred(self.port.stopListening)]
        for proto in list(self.open):
            waits.append(proto.lost)
            proto.transport.abortConnection()
        return defer.gatherResults(waits)
