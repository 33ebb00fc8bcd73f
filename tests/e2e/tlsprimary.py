"""``python tests/e2e/tlsprimary.py PORT DIR MODE``: the scripted primary (fakeprimary) as a
process of its own, on 127.0.0.1:PORT, for end-to-end tests of the real server.  MODE:
``other-ca`` (STARTTLS with a certificate from a CA the route does not trust: DIR/other) or
``auth`` (STARTTLS with DIR's CA, and AUTH that accepts only user/right-password).
Prints "ready" once listening."""

from __future__ import annotations

import sys
from pathlib import Path

from fakeprimary import FakePrimary, TestCA
from twisted.internet import reactor


def main(port: int, directory: Path, mode: str) -> None:
    ca = TestCA(directory)  # the CA the route trusts (its ca_file): DIR/ca.pem
    if mode == "other-ca":
        (directory / "other").mkdir(exist_ok=True)
        other = TestCA(directory / "other", name="Some Other CA")
        primary = FakePrimary(tls_context=other.server_context("primary.test"))
    else:
        primary = FakePrimary(
            tls_context=ca.server_context("primary.test"),
            credentials={b"user": b"right-password"},
        )
    reactor.listenTCP(port, primary, interface="127.0.0.1")
    print("ready", flush=True)
    reactor.run()


if __name__ == "__main__":
    main(int(sys.argv[1]), Path(sys.argv[2]), sys.argv[3])
