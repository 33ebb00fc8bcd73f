"""The server's TLS profiles: what each offers, dual certificates, and handshakes in memory
(no sockets) with clients that offer ALPN or only old suites."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from OpenSSL import SSL

from mxbackup.config.model import TLSConfig
from mxbackup.wire import tlsprofile
from mxbackup.wire.tlsprofile import PROFILES, ServerTLS
from tlsutil import make_cert


def write_pair(directory: Path, kind: str) -> tuple[str, str]:
    key = ec.generate_private_key(ec.SECP256R1()) if kind == "ec" else _rsa()
    cert_path, key_path = make_cert(directory, key=key, stem=f"{kind}-")
    return str(cert_path), str(key_path)


_RSA: list[rsa.RSAPrivateKey] = []


def _rsa() -> rsa.RSAPrivateKey:
    if not _RSA:  # one 2048-bit key per test run: generating it is the slow part
        _RSA.append(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    return _RSA[0]


@pytest.fixture(scope="module")
def pairs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[str, str]]:
    directory = tmp_path_factory.mktemp("certs")
    return {kind: write_pair(directory, kind) for kind in ("rsa", "ec")}


def handshake(server: ServerTLS, client: SSL.Context, alpn: list[bytes] | None = None) -> Any:
    """Run a handshake between memory BIOs; the server's connection, or the SSL.Error."""
    s = server.serverConnectionForTLS(None)
    s.set_accept_state()
    c = SSL.Connection(client, None)
    if alpn:
        c.set_alpn_protos(alpn)
    c.set_connect_state()
    for _ in range(10):
        for one, other in ((c, s), (s, c)):
            try:
                one.do_handshake()
            except SSL.WantReadError:
                pass
            except SSL.Error as e:
                return e
            try:
                other.bio_write(one.bio_read(65536))
            except SSL.WantReadError:
                pass
    return s


def client(minimum: int = SSL.TLS1_VERSION, maximum: int = 0, ciphers: str = "") -> SSL.Context:
    ctx = SSL.Context(SSL.TLS_METHOD)
    ctx.set_min_proto_version(minimum)
    if maximum:
        ctx.set_max_proto_version(maximum)
    if ciphers:
        ctx.set_cipher_list(ciphers.encode())
    return ctx


def tls12_suites(server: ServerTLS) -> list[str]:
    return [c for c in server.serverConnectionForTLS(None).get_cipher_list() if "TLS_" not in c]


def test_config_choices_are_the_profiles() -> None:
    assert set(tlsprofile.PROFILE_NAMES) == {"modern", "intermediate", "compatible"}
    assert TLSConfig("c", "k").profile == tlsprofile.DEFAULT_PROFILE == "intermediate"


def test_intermediate_offers_only_forward_secret_aead_suites(pairs) -> None:
    suites = tls12_suites(ServerTLS(PROFILES["intermediate"], [pairs["rsa"], pairs["ec"]]))
    assert suites and all(s.startswith("ECDHE-") for s in suites)
    assert all("GCM" in s or "CHACHA20" in s for s in suites)


def test_compatible_adds_cbc_and_static_rsa(pairs) -> None:
    suites = tls12_suites(ServerTLS(PROFILES["compatible"], [pairs["rsa"]]))
    assert "AES128-SHA" in suites and "ECDHE-RSA-AES128-SHA" in suites
    assert suites[0].startswith("ECDHE-") and "GCM" in suites[0]  # strongest first


def test_client_offering_alpn_is_not_refused(pairs) -> None:
    """Go's and Android's hellos offer h2/http1.1: SMTP ignores ALPN (was: internal_error)."""
    server = ServerTLS(PROFILES["intermediate"], [pairs["rsa"]])
    conn = handshake(server, client(), alpn=[b"h2", b"http/1.1"])
    assert isinstance(conn, SSL.Connection), conn
    assert conn.get_alpn_proto_negotiated() == b""


@pytest.mark.parametrize(
    ("cipher", "kind"),
    [("ECDHE-ECDSA-AES128-GCM-SHA256", "ec"), ("ECDHE-RSA-AES256-GCM-SHA384", "rsa")],
)
def test_dual_certificates_serve_each_key_type(pairs, cipher: str, kind: str) -> None:
    server = ServerTLS(PROFILES["intermediate"], [pairs["rsa"], pairs["ec"]])
    conn = handshake(server, client(maximum=SSL.TLS1_2_VERSION, ciphers=cipher))
    assert isinstance(conn, SSL.Connection), conn
    assert conn.get_cipher_name() == cipher


@pytest.mark.parametrize("cipher", ["AES128-SHA", "AES256-GCM-SHA384", "ECDHE-RSA-AES128-SHA"])
def test_intermediate_refuses_static_rsa_and_cbc(pairs, cipher: str) -> None:
    server = ServerTLS(PROFILES["intermediate"], [pairs["rsa"]])
    assert isinstance(
        handshake(server, client(maximum=SSL.TLS1_2_VERSION, ciphers=cipher)), SSL.Error
    )
    compatible = ServerTLS(PROFILES["compatible"], [pairs["rsa"]])
    conn = handshake(compatible, client(maximum=SSL.TLS1_2_VERSION, ciphers=cipher))
    assert isinstance(conn, SSL.Connection), conn


def test_modern_is_tls13_only(pairs) -> None:
    server = ServerTLS(PROFILES["modern"], [pairs["ec"]])
    assert isinstance(handshake(server, client(maximum=SSL.TLS1_2_VERSION)), SSL.Error)
    conn = handshake(server, client())
    assert isinstance(conn, SSL.Connection) and conn.get_protocol_version_name() == "TLSv1.3"


def test_intermediate_refuses_tls11(pairs) -> None:
    server = ServerTLS(PROFILES["intermediate"], [pairs["rsa"]])
    old = client(maximum=SSL.TLS1_1_VERSION, ciphers="DEFAULT:@SECLEVEL=0")
    assert isinstance(handshake(server, old), SSL.Error)


def test_two_certificates_of_one_key_type_are_refused(pairs) -> None:
    with pytest.raises(ValueError, match="same key type"):
        ServerTLS(PROFILES["intermediate"], [pairs["ec"], pairs["ec"]])


def test_a_key_that_does_not_match_is_refused(pairs) -> None:
    with pytest.raises(SSL.Error):
        ServerTLS(PROFILES["intermediate"], [(pairs["rsa"][0], pairs["ec"][1])])


@pytest.mark.parametrize("version", ["TLSv1_2", "TLSv1_3"])
def test_a_client_can_resume_its_session(pairs: dict[str, tuple[str, str]], version: str) -> None:
    import ssl

    server = ServerTLS(PROFILES["intermediate"], [pairs["rsa"]])
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.check_hostname, client.verify_mode = False, ssl.CERT_NONE
    client.minimum_version = client.maximum_version = getattr(ssl.TLSVersion, version)

    def connect(session: Any = None) -> Any:
        s = server.serverConnectionForTLS(None)
        s.set_accept_state()
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        c = client.wrap_bio(incoming, outgoing, session=session)

        def pump() -> None:
            if data := outgoing.read():
                s.bio_write(data)
            with contextlib.suppress(SSL.WantReadError):
                s.do_handshake()
            with contextlib.suppress(SSL.WantReadError):
                incoming.write(s.bio_read(65536))

        for _ in range(10):
            try:
                c.do_handshake()
            except ssl.SSLWantReadError:
                pump()
                continue
            pump()  # the client's last flight in, the server's tickets out
            with contextlib.suppress(ssl.SSLWantReadError):
                c.read(1)  # takes in the tickets
            return c
        raise AssertionError("no handshake")

    first = connect()
    assert not first.session_reused and first.session is not None
    assert connect(first.session).session_reused
