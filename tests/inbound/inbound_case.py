"""What the inbound protocol tests share: a transaction, a message, reply parsing, a runner
that holds commits open."""

from __future__ import annotations

from twisted.internet import defer

MSG = b"Subject: hi\r\n\r\nbody\r\n.\r\n"


TXN = b"EHLO c.test\r\nMAIL FROM:<s@sender.test>\r\nRCPT TO:<u@example.com>\r\nDATA\r\n"


def final_codes(lines: list[str]) -> list[int]:
    return [int(line[:3]) for line in lines if line[3:4] == " "]


class ManualThread:
    """A round runner whose results the test releases by hand (to hold a commit open)."""

    def __init__(self) -> None:
        self.calls: list[tuple[defer.Deferred, object, tuple]] = []

    def __call__(self, fn, *args) -> defer.Deferred:
        d: defer.Deferred = defer.Deferred()
        self.calls.append((d, fn, args))
        return d

    def release_all(self) -> None:
        while self.calls:
            d, fn, args = self.calls.pop(0)
            try:
                d.callback(fn(*args))
            except Exception as e:  # noqa: BLE001
                d.errback(e)
