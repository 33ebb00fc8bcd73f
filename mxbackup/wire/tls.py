"""Client TLS options: verified with service-identity against the system trust store (or the
route's ``ca_file``), or unverified when the route says so (MX delivery: like Postfix "may").

Verified: TLS 1.2 or later with forward-secret AEAD suites only (``tlsprofile``): a route that
asks for a checked certificate wants real protection.  Unverified (opportunistic): the wider
list, because a handshake that fails makes the delivery fall back to plain text or wait."""

from __future__ import annotations

from typing import Any

from twisted.internet import ssl

from mxbackup.wire import tlsprofile
from mxbackup.wire.contract import Settings

BEGIN = b"-----BEGIN CERTIFICATE-----"
END = b"-----END CERTIFICATE-----"

_VERIFIED = ssl.AcceptableCiphers.fromOpenSSLCipherString(tlsprofile.CLIENT_VERIFIED)
_OPPORTUNISTIC = ssl.AcceptableCiphers.fromOpenSSLCipherString(tlsprofile.CLIENT_OPPORTUNISTIC)


def wants_tls(settings: Settings) -> bool:
    """TLS is asked for by the route, or needed to keep the password off the wire."""
    return settings.security != "none" or needs_tls(settings)


def needs_tls(settings: Settings) -> bool:
    """Without TLS the session must not go on (no plain-text fallback)."""
    return settings.security in ("ssl", "starttls_required") or bool(
        settings.username and not settings.allow_plaintext_auth
    )


def client_context(settings: Settings, host: str) -> Any:
    """The TLS options for ``host``."""
    if not settings.verify_certificate:
        return ssl.CertificateOptions(
            verify=False,
            acceptableCiphers=_OPPORTUNISTIC,
            insecurelyLowerMinimumTo=ssl.TLSVersion.TLSv1_0,
        )
    trust: Any = ssl.platformTrust()
    if settings.ca_file:
        with open(settings.ca_file, "rb") as f:
            trust = ssl.trustRootFromCertificates(
                [ssl.Certificate.loadPEM(block) for block in cert_blocks(f.read())]
            )
    return ssl.optionsForClientTLS(
        host,
        trustRoot=trust,
        extraCertificateOptions={
            "acceptableCiphers": _VERIFIED,
            "raiseMinimumTo": ssl.TLSVersion.TLSv1_2,
        },
    )


def cert_blocks(pem: bytes) -> list[bytes]:
    """Each certificate of a PEM bundle (text between them, comments..., is dropped)."""
    return [part[part.index(BEGIN) :] + END for part in pem.split(END) if BEGIN in part]
