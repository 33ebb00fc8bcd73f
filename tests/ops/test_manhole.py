"""The SSH manhole, logged into with the system's OpenSSH client, as an operator would."""

from __future__ import annotations

import os
import re
import shutil
import stat
import struct
import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from twisted.conch.ssh import keys
from twisted.internet import defer, protocol, reactor
from twisted.trial.unittest import SynchronousTestCase, TestCase

from helpers import listening_port, make_client_key, track_connections
from mxbackup.config import ManholeConfig
from mxbackup.ops.manhole import (
    KEY_EXCHANGES,
    AuthorizedKeysFile,
    HardenedConchFactory,
    load_or_create_host_key,
    make_manhole_service,
)

SSH = shutil.which("ssh")
_ESCAPE = re.compile(r"\x1b(?:\[[0-9;?]*[A-Za-z]|.)")


def temp_dir(case: SynchronousTestCase) -> Path:
    """A fresh directory outside the source tree, removed after the test."""
    path = Path(tempfile.mkdtemp(prefix="mxbackup-manhole-"))
    case.addCleanup(shutil.rmtree, path, ignore_errors=True)
    return path


def screen_lines(output: bytes) -> list[str]:
    """What the terminal shows, one line a string, without the escape sequences."""
    text = _ESCAPE.sub("", output.decode("utf-8", "replace"))
    return [line.strip() for line in re.split(r"[\r\n]+", text)]


class _SSHProcess(protocol.ProcessProtocol):
    def __init__(self, stdin: bytes, close_stdin: bool) -> None:
        self.stdin = stdin
        self.close_stdin = close_stdin
        self.out: list[bytes] = []
        self.err: list[bytes] = []
        self.ended: defer.Deferred[tuple[bytes, bytes, int]] = defer.Deferred()

    def connectionMade(self) -> None:
        self.transport.write(self.stdin)
        if self.close_stdin:
            self.transport.closeStdin()

    def outReceived(self, data: bytes) -> None:
        self.out.append(data)

    def errReceived(self, data: bytes) -> None:
        self.err.append(data)

    def processEnded(self, reason: Any) -> None:
        code = reason.value.exitCode
        self.ended.callback((b"".join(self.out), b"".join(self.err), code))


class ManholeTests(TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def setUp(self) -> Any:
        if SSH is None:
            self.skipTest("no ssh client (apt-get install openssh-client)")
        self.tmp = temp_dir(self)
        self.key, public = make_client_key(self.tmp, "operator")
        self.other_key, _ = make_client_key(self.tmp, "stranger")
        authorized = self.tmp / "authorized_keys"
        authorized.write_text(f"# operators\n{public}\n")
        self.scheduler = SimpleNamespace(queue={f"q{i}": object() for i in range(7)})
        namespace = {"scheduler": self.scheduler, "stats": SimpleNamespace(accepted=3)}
        svc = make_manhole_service(
            ManholeConfig(authorized_keys=str(authorized), listen="tcp:0:interface=127.0.0.1"),
            namespace,
            reactor,
            host_key_path=str(self.tmp / "manhole_host_key"),
        )
        lost = track_connections(svc.factory)
        listening = listening_port(svc)
        svc.startService()
        self.port = (yield listening).getHost().port

        @defer.inlineCallbacks
        def stop() -> Any:
            yield defer.gatherResults(lost)
            yield svc.stopService()

        self.addCleanup(stop)

    def ssh(
        self, key: Path, stdin: bytes, terminal: bool, command: str | None = None
    ) -> defer.Deferred[tuple[bytes, bytes, int]]:
        args = [
            SSH,
            *(["-tt"] if terminal else ["-T"]),
            "-F",
            "/dev/null",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "PasswordAuthentication=no",
            "-o",
            "KbdInteractiveAuthentication=no",
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "IdentityAgent=none",
            "-o",
            "LogLevel=ERROR",
            "-o",
            "ConnectTimeout=20",
            "-i",
            str(key),
            "-p",
            str(self.port),
            "admin@127.0.0.1",
            *([command] if command is not None else []),
        ]
        # With a terminal, the session ends with Ctrl-D, as typed; without one, at end of input.
        process = _SSHProcess(stdin, close_stdin=not terminal)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.tmp)}
        reactor.spawnProcess(process, SSH, args, env=env)
        return process.ended

    @defer.inlineCallbacks
    def test_read_queue_depth_interactively(self) -> Any:
        out, err, code = yield self.ssh(
            self.key, b"print(len(scheduler.queue))\r\x04", terminal=True
        )
        self.assertIn("7", screen_lines(out), (out, err))
        self.assertEqual(code, 0, err)

    @defer.inlineCallbacks
    def test_scripted_session_changes_live_objects(self) -> Any:
        commands = b"print(len(scheduler.queue))\nscheduler.queue.clear()\nprint(stats.accepted)\n"
        out, err, code = yield self.ssh(self.key, commands, terminal=False)
        lines = screen_lines(out)
        self.assertIn("7", lines, (out, err))
        self.assertIn("3", lines, (out, err))
        self.assertEqual(self.scheduler.queue, {})
        self.assertEqual(code, 0, err)

    @defer.inlineCallbacks
    def test_banner_and_kexinit_offer_only_modern_algorithms(self) -> Any:
        """What ssh-audit reads: the version line and the server's KEXINIT name-lists."""
        done: defer.Deferred[bytes] = defer.Deferred()
        client = protocol.ClientCreator(reactor, _KexInitReader, done)
        connection = yield client.connectTCP("127.0.0.1", self.port)
        banner, lists = parse_banner_and_kexinit((yield done))
        connection.transport.loseConnection()
        self.assertEqual(banner, b"SSH-2.0-Server")
        kex, host_keys, ciphers, _, macs, _, compression, _ = lists[:8]
        self.assertLessEqual(set(kex) - {b"ext-info-s"}, set(KEY_EXCHANGES))
        self.assertIn(b"curve25519-sha256", kex)
        self.assertEqual(host_keys, [b"ssh-ed25519"])
        self.assertEqual(ciphers, [b"aes256-ctr", b"aes192-ctr", b"aes128-ctr"])
        self.assertEqual(macs, [b"hmac-sha2-512", b"hmac-sha2-256"])
        self.assertEqual(compression, [b"none"])
        self.assertEqual(lists[2:8:2], lists[3:8:2])  # both directions alike

    @defer.inlineCallbacks
    def test_exec_request_prints_the_value_and_exits_0(self) -> Any:
        out, err, code = yield self.ssh(self.key, b"", False, "len(scheduler.queue) * 2")
        self.assertEqual((out, code), (b"14\n", 0), err)
        out, err, code = yield self.ssh(self.key, b"", False, "x = 5; print(x + stats.accepted)")
        self.assertEqual((out, code), (b"8\n", 0), err)

    @defer.inlineCallbacks
    def test_exec_request_that_raises_prints_the_traceback_and_exits_1(self) -> Any:
        out, err, code = yield self.ssh(self.key, b"", False, "scheduler.nothing")
        self.assertEqual(code, 1, (out, err))
        self.assertIn(b"Traceback", out)
        self.assertIn(b"AttributeError", out)

    @defer.inlineCallbacks
    def test_unlisted_key_is_refused(self) -> Any:
        out, err, code = yield self.ssh(
            self.other_key, b"print(len(scheduler.queue))\r\x04", terminal=True
        )
        self.assertEqual(code, 255)
        self.assertIn(b"Permission denied (publickey)", err)
        self.assertNotIn("7", screen_lines(out))
        self.assertEqual(len(self.scheduler.queue), 7)


class _KexInitReader(protocol.Protocol):
    """Sends a version line and collects the server's until its first packet is complete."""

    def __init__(self, done: defer.Deferred[bytes]) -> None:
        self.done = done
        self.data = b""

    def connectionMade(self) -> None:
        self.transport.write(b"SSH-2.0-probe\r\n")

    def dataReceived(self, data: bytes) -> None:
        self.data += data
        banner, _, rest = self.data.partition(b"\r\n")
        if len(rest) >= 4 and len(rest) >= 4 + struct.unpack(">I", rest[:4])[0]:
            if not self.done.called:
                self.done.callback(self.data)


def parse_banner_and_kexinit(data: bytes) -> tuple[bytes, list[list[bytes]]]:
    """RFC 4253 7.1: KEXINIT (20), 16-byte cookie, ten name-lists."""
    banner, _, packet = data.partition(b"\r\n")
    payload = packet[5:]
    assert payload[0] == 20, payload[:1]
    offset, lists = 17, []
    for _ in range(10):
        (length,) = struct.unpack(">I", payload[offset : offset + 4])
        text = payload[offset + 4 : offset + 4 + length]
        lists.append(text.split(b",") if text else [])
        offset += 4 + length
    return banner, lists


class HardenedFactoryTests(SynchronousTestCase):
    def test_an_existing_rsa_host_key_signs_with_sha2_only(self) -> None:
        from cryptography.hazmat.primitives.asymmetric import rsa

        key = keys.Key(rsa.generate_private_key(public_exponent=65537, key_size=2048))
        factory = HardenedConchFactory(None)
        factory.publicKeys = {key.sshType(): key.public()}
        factory.privateKeys = {key.sshType(): key}
        factory.doStart()
        self.addCleanup(factory.doStop)
        t = factory.buildProtocol(None)
        self.assertEqual(t.supportedPublicKeys, [b"rsa-sha2-512", b"rsa-sha2-256"])
        self.assertEqual(t.ourVersionString, b"SSH-2.0-Server")
        self.assertNotIn(b"diffie-hellman-group14-sha1", t.supportedKeyExchanges)


class HostKeyTests(SynchronousTestCase):
    def test_generated_once_private_and_kept(self) -> None:
        path = temp_dir(self) / "manhole_host_key"
        first = load_or_create_host_key(str(path))
        self.assertFalse(first.isPublic())
        self.assertEqual(stat.S_IMODE(path.stat().st_mode), 0o600)
        self.assertEqual(load_or_create_host_key(str(path)), first)
        self.assertFalse(Path(f"{path}.new").exists())

    def test_missing_directory_is_an_error(self) -> None:
        path = temp_dir(self) / "nowhere" / "manhole_host_key"
        self.assertRaises(OSError, load_or_create_host_key, str(path))


class AuthorizedKeysTests(SynchronousTestCase):
    def test_read_at_each_login_for_any_user(self) -> None:
        tmp = temp_dir(self)
        _, first = make_client_key(tmp, "first")
        _, second = make_client_key(tmp, "second")
        path = tmp / "authorized_keys"
        path.write_text(f"# comment\n\n{first}\nnot a key\n")
        db = AuthorizedKeysFile(str(path))
        wanted = keys.Key.fromString(first.encode())
        self.assertEqual(list(db.getAuthorizedKeys(b"admin")), [wanted])
        self.assertEqual(list(db.getAuthorizedKeys(b"anyone")), [wanted])
        path.write_text(f"{second}\n")
        self.assertEqual(list(db.getAuthorizedKeys(b"admin")), [keys.Key.fromString(second)])
        path.unlink()
        self.assertEqual(list(db.getAuthorizedKeys(b"admin")), [])
