"""A DNS server of the test's own on 127.0.0.1 (twisted.names, an in-memory authority for
everything under ``.test``), and a resolver that asks only it: the checks' tests never touch
the system resolver.  ``silent_port`` is a UDP port that never answers (timeouts)."""

from __future__ import annotations

from typing import Any

from twisted.internet import protocol
from twisted.names import authority, client, dns, server

SOA = dns.Record_SOA(
    mname="ns.test", rname="root.test", serial=1, refresh=1, retry=1, expire=60, minimum=60
)


class MemoryZone(authority.FileAuthority):
    """Everything under ``test``; ``records`` maps a name to its records (changeable)."""

    def __init__(self, records: dict[str, list[Any]]) -> None:
        self._initial = records
        super().__init__("test")

    def loadFile(self, filename: str) -> None:
        self.soa = (b"test", SOA)
        self.records = {}
        for name, records in self._initial.items():
            self.add(name, *records)
        self.records[b"test"] = [SOA]

    def add(self, name: str, *records: Any) -> None:
        self.records.setdefault(name.lower().encode(), []).extend(records)


class LoopbackDNS:
    """Start with ``start(reactor)``; stop with ``stop()`` (a Deferred)."""

    def __init__(self, records: dict[str, list[Any]] | None = None) -> None:
        self.zone = MemoryZone(records or {})
        self.queries: list[tuple[str, int]] = []
        self.port: Any = None

    def start(self, reactor: Any) -> int:
        zone, queries = self.zone, self.queries

        class Factory(server.DNSServerFactory):
            def handleQuery(self, message: Any, proto: Any, address: Any) -> Any:
                for q in message.queries:
                    queries.append((q.name.name.decode().lower(), q.type))
                return super().handleQuery(message, proto, address)

        factory = Factory(authorities=[zone])
        self.port = reactor.listenUDP(0, dns.DNSDatagramProtocol(factory), interface="127.0.0.1")
        return self.port.getHost().port

    def resolver(self, reactor: Any) -> client.Resolver:
        return client.Resolver(servers=[("127.0.0.1", self.port.getHost().port)], reactor=reactor)

    def stop(self) -> Any:
        return self.port.stopListening()


def silent_port(reactor: Any) -> Any:
    """A UDP port on 127.0.0.1 that reads queries and never answers."""
    return reactor.listenUDP(0, protocol.DatagramProtocol(), interface="127.0.0.1")


def rsa_key(bits: int = 2048) -> tuple[bytes, list[bytes]]:
    """A new RSA key: its PEM (PKCS#1) and the strings of its DKIM TXT record."""
    import base64

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    text = b"v=DKIM1; k=rsa; p=" + base64.b64encode(der)
    return pem, [text[i : i + 250] for i in range(0, len(text), 250)]


def txt_lookup(zone: MemoryZone) -> Any:
    """A dkimpy ``dnsfunc`` reading the zone the server answers from (to verify what we
    stored, as the primary would)."""

    def dnsfunc(name: bytes | str, timeout: int = 5) -> bytes | None:
        key = (name.decode() if isinstance(name, bytes) else name).lower().rstrip(".")
        for record in zone.records.get(key.encode(), []):
            if record.TYPE == dns.TXT:
                return b"".join(record.data)
        return None

    return dnsfunc
