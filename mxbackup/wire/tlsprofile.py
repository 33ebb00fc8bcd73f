"""TLS profiles (which protocol versions and cipher suites) and the server's TLS context.

Three named profiles, after Mozilla's server-side TLS guidelines:

- ``modern``: TLS 1.3 only.
- ``intermediate`` (the default): TLS 1.2 and 1.3; in TLS 1.2 only ECDHE key exchange with
  AEAD ciphers (AES-GCM, ChaCha20-Poly1305): forward secrecy always, no CBC, no static RSA,
  no finite-field DH (so no DH group weaker than the certificate).
- ``compatible``: TLS 1.0 and up, adding ECDHE with AES-CBC and static-RSA AES suites at the
  end of a server-ordered list, for the odd old MTA: between MTAs TLS is opportunistic, and a
  client that cannot agree on a suite falls back to plain text, which is worse.

The server context is built with pyOpenSSL's public API instead of Twisted's
``CertificateOptions``: that one always installs an ALPN callback which, on Twisted 26,
answers any client that offers ALPN (Go programs and Android phones configured for
``h2,http/1.1``, and testssl's simulations of them) with a fatal ``internal_error`` alert.
SMTP has no ALPN: our context ignores the extension, as RFC 7301 allows.

Elliptic-curve groups are OpenSSL's defaults (X25519, P-256, X448, P-521, P-384): pyOpenSSL
has no public call to narrow them, and all of them are strong.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from OpenSSL import SSL, crypto
from twisted.internet.interfaces import IOpenSSLServerConnectionCreator
from zope.interface import implementer

# TLS 1.2 suites of Mozilla's "intermediate" profile without the DHE ones.
_AEAD = (
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
)
_LEGACY = (
    "ECDHE-ECDSA-AES128-SHA256:ECDHE-RSA-AES128-SHA256:ECDHE-ECDSA-AES128-SHA:"
    "ECDHE-RSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA384:ECDHE-RSA-AES256-SHA384:"
    "ECDHE-ECDSA-AES256-SHA:ECDHE-RSA-AES256-SHA:"
    "AES128-GCM-SHA256:AES256-GCM-SHA384:AES128-SHA256:AES256-SHA256:AES128-SHA:AES256-SHA"
)


@dataclass(frozen=True)
class Profile:
    name: str
    minimum: int  # an SSL.*_VERSION constant
    ciphers: str  # OpenSSL cipher list for TLS 1.2 and below
    server_order: bool  # the server's order of suites wins


PROFILES: dict[str, Profile] = {
    "modern": Profile("modern", SSL.TLS1_3_VERSION, _AEAD, server_order=False),
    "intermediate": Profile("intermediate", SSL.TLS1_2_VERSION, _AEAD, server_order=False),
    # Security level 0: OpenSSL 3 refuses TLS 1.0/1.1 (SHA-1 handshake signatures) above it.
    "compatible": Profile(
        "compatible", SSL.TLS1_VERSION, f"{_AEAD}:{_LEGACY}:@SECLEVEL=0", server_order=True
    ),
}
PROFILE_NAMES: tuple[str, ...] = tuple(PROFILES)
DEFAULT_PROFILE = "intermediate"

_OPTIONS = (
    SSL.OP_NO_COMPRESSION
    | SSL.OP_SINGLE_ECDH_USE
    | SSL.OP_SINGLE_DH_USE
    | getattr(SSL, "OP_NO_RENEGOTIATION", 0)
)


SESSION_LIFETIME = 3600  # seconds a session (ticket or cache entry) may be resumed


def context(profile: Profile, pairs: list[tuple[str, str]]) -> SSL.Context:
    """A server context offering each (certificate chain file, key file) pair: OpenSSL picks
    the pair whose key type (RSA, ECDSA) the client supports.  Raises on unreadable or
    mismatched files."""
    ctx = SSL.Context(SSL.TLS_METHOD)
    ctx.set_options(_OPTIONS | (SSL.OP_CIPHER_SERVER_PREFERENCE if profile.server_order else 0))
    ctx.set_min_proto_version(profile.minimum)
    ctx.set_cipher_list(profile.ciphers.encode("ascii"))
    # Resumption (a client back within the hour skips the key exchange and the certificate
    # signature: most of a handshake's CPU): TLS 1.3 and 1.2 session tickets, sealed with a
    # key OpenSSL draws at random for this context (so a restart or reload invalidates them,
    # and nothing is on disk); plus the server-side cache for TLS 1.2 clients without
    # tickets.  Postfix's defaults do the same (tickets, and a one-hour session cache).
    ctx.set_session_cache_mode(SSL.SESS_CACHE_SERVER)
    ctx.set_session_id(b"mxbackup")
    ctx.set_timeout(SESSION_LIFETIME)
    kinds = set()
    for certificate, key in pairs:
        with open(certificate, "rb") as f:
            kind = crypto.load_certificate(crypto.FILETYPE_PEM, f.read()).get_pubkey().type()
        if kind in kinds:
            raise ValueError(f"{certificate}: a second certificate of the same key type")
        kinds.add(kind)
        ctx.use_certificate_chain_file(certificate)  # the chain belongs to this certificate
        ctx.use_privatekey_file(key)
        ctx.check_privatekey()
    return ctx


@implementer(IOpenSSLServerConnectionCreator)
class ServerTLS:
    """What ``startTLS`` is given on the server side: one shared context, one connection per
    client; no ALPN, no SNI callback (one name, or a certificate that covers all of ours)."""

    def __init__(self, profile: Profile, pairs: list[tuple[str, str]]) -> None:
        self.profile = profile
        self.context = context(profile, pairs)

    def serverConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:  # noqa: N802
        return SSL.Connection(self.context, None)


# --- the client side (wire/tls.py) ------------------------------------------------------------

# Verified delivery (a route that asked for TLS and a checked certificate): TLS 1.2+, forward
# secrecy, AEAD.  Opportunistic delivery (no verification) takes anything better than plain
# text, as Postfix's "may" level does, except the broken (RC4, 3DES, export, NULL).
CLIENT_VERIFIED = _AEAD
CLIENT_OPPORTUNISTIC = f"{_AEAD}:{_LEGACY}"
