"""Client TLS options: verified with service-identity against the system trust store (or the
route's ``ca_file``), or unverified when the route says so (MX delivery: like Postfix "may").

Verified: TLS 1.2 or later with forward-secret AEAD suites only (``tlsprofile``): a route that
asks for a checked certificate wants real protection.  Unverified (opportunistic): the wider
list, because a handshake that fails makes the delivery fall back to plain text or wait.

A verified connection keeps what the handshake showed (``Checked``): the first certificate
error OpenSSL reported, and the target's certificate's subject and issuer, so that a failure
says which check failed ("certificate verification failed: unable to get local issuer
certificate (subject CN=..., issuer CN=...)"), not only "certificate verify failed"."""

from __future__ import annotations

from typing import Any

from OpenSSL import SSL, crypto
from twisted.internet import ssl
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from zope.interface import implementer

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
    return Checked(
        ssl.optionsForClientTLS(
            host,
            trustRoot=trust,
            extraCertificateOptions={
                "acceptableCiphers": _VERIFIED,
                "raiseMinimumTo": ssl.TLSVersion.TLSv1_2,
            },
        ),
        host,
        settings.ca_file or "",
    )


def cert_blocks(pem: bytes) -> list[bytes]:
    """Each certificate of a PEM bundle (text between them, comments..., is dropped)."""
    return [part[part.index(BEGIN) :] + END for part in pem.split(END) if BEGIN in part]


@implementer(IOpenSSLClientConnectionCreator)
class Checked:
    """Twisted's verifying client options (``options``: they check the chain and the name),
    with what the handshake showed kept for the reason of a failure (``explain``)."""

    def __init__(self, options: Any, host: str, ca_file: str = "") -> None:
        self.options = options
        self.host = host
        self.ca_file = ca_file
        self.connection: SSL.Connection | None = None

    def clientConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        self.connection = self.options.clientConnectionForTLS(tlsProtocol)
        return self.connection

    def explain(self, failure: str) -> str:
        """``failure`` (a verification or handshake error) with the check that failed and the
        target's certificate (subject, issuer), when it sent one."""
        chain = self.connection.get_peer_cert_chain() if self.connection is not None else None
        if not chain:
            return failure
        leaf = chain[0].to_cryptography()
        subject, issuer = leaf.subject.rfc4514_string(), leaf.issuer.rfc4514_string()
        problem = self._chain_problem(chain)
        if problem:
            failure = f"certificate verification failed: {problem}"
        return f"{failure} (certificate: subject {subject}, issuer {issuer})"

    def _chain_problem(self, chain: list[crypto.X509]) -> str:
        """OpenSSL's verify error for ``chain`` against our trust (``ca_file``, else the
        system's), checked again after the fact: Twisted's options keep no reason."""
        store = crypto.X509Store()
        try:
            if self.ca_file:
                with open(self.ca_file, "rb") as f:
                    for block in cert_blocks(f.read()):
                        store.add_cert(crypto.load_certificate(crypto.FILETYPE_PEM, block))
            else:
                store.set_default_paths()
            crypto.X509StoreContext(store, chain[0], chain[1:]).verify_certificate()
        except crypto.X509StoreContextError as e:
            return str(e)
        except Exception:  # noqa: BLE001 - no diagnosis; the failure is told as it is
            return ""
        return ""
