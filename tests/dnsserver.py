"""A DNS server of the test's own on 127.0.0.1 (twisted.names, an in-memory authority for
everything under ``.test``), and a resolver that asks only it: the checks' tests never touch
the system resolver.  ``silent_port`` is a UDP port that never answers (timeouts)."""

from __future__ import annotations

from typing import Any

from twisted.internet import protocol
from twisted.internet import reactor as global_reactor
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


# -- a second server with zones the test may change, for MX tests (also runs as a process) --


class Zone(authority.FileAuthority):
    """The zone ``origin``; ``records`` maps names (str) to lists of ``dns.Record_*``."""

    def __init__(self, origin: str, records: dict[str, list[Any]]) -> None:
        self._initial = records
        super().__init__(origin)

    def loadFile(self, filename: str) -> None:
        origin = filename
        self.origin = origin
        self.soa = (
            origin.encode(),
            dns.Record_SOA(
                mname=f"ns.{origin}",
                rname=f"root.{origin}",
                serial=1,
                refresh=1,
                retry=1,
                expire=1,
                minimum=1,
                ttl=1,
            ),
        )
        self.records = {}
        self.set_all(self._initial)
        self.records.setdefault(origin.encode(), []).append(self.soa[1])

    def set(self, name: str, records: list[Any]) -> None:
        key = name.lower().encode()
        soa = [r for r in self.records.get(key, []) if isinstance(r, dns.Record_SOA)]
        self.records[key] = list(records) + soa

    def set_all(self, records: dict[str, list[Any]]) -> None:
        for name, recs in records.items():
            self.set(name, recs)


class DNSServer:
    """UDP and TCP on 127.0.0.1 (one port number for both); ``queries`` counts questions."""

    def __init__(self, zones: list[Zone], reactor: Any = global_reactor) -> None:
        self.queries: list[tuple[str, int]] = []
        outer = self

        class Factory(server.DNSServerFactory):
            def handleQuery(self, message: Any, protocol: Any, address: Any) -> Any:
                for q in message.queries:
                    outer.queries.append((str(q.name), q.type))
                return super().handleQuery(message, protocol, address)

        self.factory = Factory(authorities=zones)
        self.udp = reactor.listenUDP(
            0, dns.DNSDatagramProtocol(self.factory), interface="127.0.0.1"
        )
        self.port = self.udp.getHost().port
        try:
            self.tcp = reactor.listenTCP(self.port, self.factory, interface="127.0.0.1")
        except Exception:  # noqa: BLE001 - the port number is taken for TCP: UDP only
            self.tcp = None

    def stop(self) -> Any:
        from twisted.internet import defer

        stops = [defer.maybeDeferred(self.udp.stopListening)]
        if self.tcp is not None:
            stops.append(defer.maybeDeferred(self.tcp.stopListening))
        return defer.gatherResults(stops)


def main(argv: list[str]) -> None:
    """``python tests/dnsserver.py ADDRESS PORT ZONES.json``: serve until killed (for tests
    whose peers resolve through libc, which asks port 53 only).  The JSON maps each zone's
    origin to {name: [["MX", pref, host] | ["A", address], ...]}; TTL 1 s.  Prints "ready"."""
    import json
    import sys

    from twisted.internet import reactor

    address, port, path = argv[0], int(argv[1]), argv[2]
    with open(path) as f:
        spec = json.load(f)
    zones = []
    for origin, names in spec.items():
        records = {}
        for name, rows in names.items():
            records[name] = [
                dns.Record_MX(row[1], row[2].encode(), ttl=1)
                if row[0] == "MX"
                else dns.Record_A(row[1], ttl=1)
                for row in rows
            ]
        zones.append(Zone(origin, records))
    factory = server.DNSServerFactory(authorities=zones)
    reactor.listenUDP(port, dns.DNSDatagramProtocol(factory), interface=address)
    reactor.listenTCP(port, factory, interface=address)
    print("ready", flush=True)
    sys.stdout.flush()
    reactor.run()


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
