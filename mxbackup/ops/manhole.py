"""An SSH manhole: a Python prompt inside the running server, for operators.

Log in with a key listed in the configured ``authorized_keys`` file (one OpenSSH public key a
line, ``#`` comments; lines with options such as ``from="..."`` are ignored); there are no
passwords.  Any user name is accepted, the key is what counts; by convention::

    ssh -p 2222 admin@127.0.0.1
    >>> len(scheduler.queue)

The file is read at each login, so adding or removing a key needs no restart.  The prompt's
namespace is the caller's (config, spool, scheduler, admin, stats, service); each session gets
its own copy of the dict, but the objects in it are the live ones: what you change, changes.
Code runs in the reactor thread, so a slow statement stalls the whole server.

Scripted use works too: without a terminal (``echo 'print(len(scheduler.queue))' | ssh ...``)
the session ends when the input does.  Or give the code as ssh's command (an exec request)::

    ssh -p 2222 admin@127.0.0.1 'len(scheduler.queue)'

prints the expression's value (``repr``; statements run too, and what they print is shown;
a Deferred is waited for) and exits 0; an exception prints its traceback and exits 1.

The server's host key is an ed25519 key generated on first start (``host_key_path``,
mode 0600) and kept, so clients see the same host key across restarts.  A host key file of
another type that is already there (RSA, ECDSA) is still used, so operators' known_hosts
entries stay valid, with a warning; RSA then signs with SHA-2 only (no ``ssh-rsa``).

Only modern algorithms are offered (``HardenedConchFactory``): curve25519 key exchange (and
the ML-KEM hybrid where conch has it), AES-CTR, HMAC-SHA2, no compression, and a version
banner that names no software.  Conch has no encrypt-then-MAC MACs and no AEAD ciphers
(chacha20-poly1305, aes-gcm), which ssh-audit notes: keep the manhole on loopback.
"""

from __future__ import annotations

import contextlib
import io
import os
import struct
import traceback
from collections.abc import Iterable
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from twisted.application import service, strports
from twisted.conch import manhole, manhole_ssh
from twisted.conch.checkers import IAuthorizedKeysDB, SSHPublicKeyChecker, readAuthorizedKeyFile
from twisted.conch.insults import insults
from twisted.conch.interfaces import IConchUser
from twisted.conch.ssh import channel, keys
from twisted.cred.portal import Portal
from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from mxbackup.config import ManholeConfig

log = Logger(namespace="mxbackup.manhole")


def make_manhole_service(
    config: ManholeConfig, namespace: dict[str, Any], reactor: Any, host_key_path: str
) -> service.IService:
    """The SSH manhole listening on ``config.listen``.  Creates the host key at
    ``host_key_path`` if it does not exist (raises ``OSError`` if it cannot)."""
    realm = manhole_ssh.TerminalRealm()
    realm.sessionFactory = type("Session", (_Session,), {"namespace": namespace})
    realm.chainedProtocolFactory = lambda: insults.ServerProtocol(manhole.ColoredManhole, namespace)
    checker = SSHPublicKeyChecker(AuthorizedKeysFile(config.authorized_keys))
    factory = HardenedConchFactory(Portal(realm, [checker]))
    host_key = load_or_create_host_key(host_key_path)
    if host_key.sshType() != b"ssh-ed25519":
        log.warn(
            "manhole: host key {path} is {kind}; delete it to get an ed25519 key at the next "
            "start (clients will see a new host key)",
            path=host_key_path,
            kind=host_key.sshType().decode(),
        )
    # Instance attributes: ConchFactory's class-level dicts are shared by every instance.
    factory.publicKeys = {host_key.sshType(): host_key.public()}
    factory.privateKeys = {host_key.sshType(): host_key}
    return strports.service(config.listen, factory, reactor=reactor)


# What the manhole offers, most preferred first; each list is filtered from what conch
# supports, so an algorithm this conch lacks is simply not offered.
BANNER = b"SSH-2.0-Server"  # no software name or version for scanners to match
KEY_EXCHANGES = (
    b"mlkem768x25519-sha256",
    b"curve25519-sha256",
    b"curve25519-sha256@libssh.org",
)
CIPHERS = (b"aes256-ctr", b"aes192-ctr", b"aes128-ctr")
MACS = (b"hmac-sha2-512", b"hmac-sha2-256")
HOST_KEY_ALGORITHMS = (
    b"ssh-ed25519",
    b"ecdsa-sha2-nistp256",
    b"ecdsa-sha2-nistp384",
    b"ecdsa-sha2-nistp521",
    b"rsa-sha2-512",
    b"rsa-sha2-256",
)


def _allowed(offered: list[bytes], allowed: tuple[bytes, ...]) -> list[bytes]:
    supported = set(offered)
    return [name for name in allowed if name in supported]


class HardenedConchFactory(manhole_ssh.ConchFactory):
    """Twisted's manhole factory whose transports offer only the algorithms above.  It sets
    the transport's documented ``supported*`` lists and ``ourVersionString`` on each new
    transport, before the connection (and so the banner and the KEXINIT) starts."""

    def buildProtocol(self, addr: Any) -> Any:
        t = super().buildProtocol(addr)
        t.ourVersionString = BANNER
        t.supportedKeyExchanges = _allowed(t.supportedKeyExchanges, KEY_EXCHANGES)
        t.supportedCiphers = _allowed(t.supportedCiphers, CIPHERS)
        t.supportedMACs = _allowed(t.supportedMACs, MACS)
        t.supportedPublicKeys = _allowed(t.supportedPublicKeys, HOST_KEY_ALGORITHMS)
        t.supportedCompressions = [b"none"]
        return t


@implementer(IAuthorizedKeysDB)
class AuthorizedKeysFile:
    """The keys in one authorized_keys file, for any user name; re-read at each login."""

    def __init__(self, path: str) -> None:
        self.path = path

    def getAuthorizedKeys(self, username: bytes) -> Iterable[keys.Key]:
        try:
            with open(self.path, "rb") as f:
                return list(readAuthorizedKeyFile(f))
        except OSError as e:
            log.error("manhole: cannot read {path}: {error}", path=self.path, error=e)
            return []


def load_or_create_host_key(path: str) -> keys.Key:
    """Load the private host key at ``path``; generate an ed25519 key there (0600) first if
    the file does not exist."""
    if not os.path.exists(path):
        pem = ed25519.Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
        partial = f"{path}.new"
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
            f.flush()
            os.fsync(f.fileno())
        os.replace(partial, path)
        log.info("manhole: generated host key {path}", path=path)
    return keys.Key.fromFile(path)


class _Session(manhole_ssh.TerminalSession):
    """Twisted's session, made to survive what ssh clients do: no pty (a default size),
    window resizes, and end of input (closes the session instead of raising)."""

    width, height = 80, 24
    _transport: manhole_ssh.TerminalSessionTransport | None = None
    namespace: dict[str, Any] = {}  # noqa: RUF012 - set per service by make_manhole_service

    def execCommand(self, proto: Any, cmd: bytes) -> None:
        """``ssh host 'expression'``: run it in a copy of the namespace, print the result,
        exit 0 (1 and the traceback if it raised)."""
        user = IConchUser(self.original)
        d = defer.maybeDeferred(run_code, cmd.decode("utf-8", "replace"), dict(self.namespace))

        def answer(result: tuple[str, int]) -> None:
            output, status = result
            proto.write(output.encode("utf-8", "replace"))
            _end(user.conn, proto.session, status)

        d.addCallback(answer)

    def openShell(self, proto: Any) -> None:
        user = IConchUser(self.original)
        self._transport = self.transportFactory(
            proto, self.chainedProtocolFactory(), user, self.width, self.height
        )
        # Twisted's glue closes the channel without an exit status (ssh then exits with 255):
        # send 0, and close once any buffered output is out.
        proto.transport.loseConnection = lambda: _end(user.conn, proto.session)

    def windowChanged(self, newWindowSize: tuple[int, ...]) -> None:
        self.height, self.width = newWindowSize[:2]
        if self._transport is not None:
            terminal = self._transport.chainedProtocol.terminalProtocol
            terminal.terminalSize(self.width, self.height)

    def eofReceived(self) -> None:
        if self._transport is not None:
            self._transport.chainedProtocol.loseConnection()


def run_code(code: str, namespace: dict[str, Any]) -> Any:
    """Evaluate ``code`` (an expression, else statements): (what to print, exit status), or
    a Deferred of it when the expression's value is a Deferred."""
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            try:
                compiled = compile(code, "<ssh>", "eval")
            except SyntaxError:
                exec(compile(code, "<ssh>", "exec"), namespace)  # noqa: S102 - the manhole's job
                return out.getvalue(), 0
            value = eval(compiled, namespace)  # noqa: S307 - the manhole's job
    except BaseException:  # noqa: BLE001 - whatever the operator's code raised
        return out.getvalue() + traceback.format_exc(), 1
    if isinstance(value, defer.Deferred):
        value.addCallbacks(
            lambda v: (out.getvalue() + _shown(v), 0),
            lambda f: (out.getvalue() + f.getTraceback(), 1),
        )
        return value
    return out.getvalue() + _shown(value), 0


def _shown(value: Any) -> str:
    return "" if value is None else f"{value!r}\n"


def _end(conn: Any, session: Any, status: int = 0) -> None:
    if not session.closing:
        conn.sendRequest(session, b"exit-status", struct.pack(">L", status))
        channel.SSHChannel.loseConnection(session)  # not SSHSession's: it would call us again
