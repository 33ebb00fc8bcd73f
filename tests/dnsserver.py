"""A DNS server of the test's own on 127.0.0.1 (twisted.names), with records the test may
change while it runs, each with its TTL.  Never the system resolver."""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor as global_reactor
from twisted.names import authority, dns, server


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
