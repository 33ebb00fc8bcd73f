"""The AUTH password check: the same bcrypt work for names that exist and names that do not
(compared by the calls made and their cost, not by wall time: no flaky timing test)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import bcrypt
import pytest
from twisted.internet import defer

from mxbackup.inbound.passwords import Passwords, cost_of, dummy_cost


def account(name: str, password: bytes, cost: int) -> Any:
    return SimpleNamespace(
        username=name, password_hash=bcrypt.hashpw(password, bcrypt.gensalt(cost))
    )


class Recorder:
    def __init__(self) -> None:
        self.calls: list[bytes] = []
        self.hashed: list[int] = []

    def checkpw(self, candidate: bytes, hashed: bytes) -> bool:
        self.calls.append(hashed)
        return bcrypt.checkpw(candidate, hashed)

    def hashpw(self, password: bytes, salt: bytes) -> bytes:
        self.hashed.append(cost_of(salt + b"x" * 31))
        return bcrypt.hashpw(password, salt)


def passwords(accounts: list[Any]) -> tuple[Passwords, Recorder]:
    r = Recorder()
    return Passwords(accounts, defer.maybeDeferred, r.checkpw, r.hashpw), r


def test_dummy_cost_is_the_most_common_then_the_highest() -> None:
    h = lambda cost: f"$2b${cost:02d}$" + "a" * 53  # noqa: E731
    assert dummy_cost([h(10), h(10), h(12)]) == 10
    assert dummy_cost([h(10), h(12)]) == 12
    assert dummy_cost([]) == 12
    assert cost_of(h(4).encode()) == 4


@pytest.mark.parametrize(
    ("username", "password"),
    [("alice", "wrong"), ("nobody", "wrong"), ("alice", "x" * 80), ("nobody", "x" * 80)],
)
def test_every_failure_makes_one_comparison_at_the_accounts_cost(username, password) -> None:
    check, r = passwords([account("alice", b"right", 5), account("bob", b"other", 5)])
    assert check.verify(username, password) is False
    assert [cost_of(h) for h in r.calls] == [5]  # one bcrypt call, the accounts' cost


def test_known_and_unknown_names_take_the_same_path() -> None:
    check, r = passwords([account("alice", b"right", 5)])
    check.verify("alice", "wrong")
    check.verify("nobody", "wrong")
    assert len(r.calls) == 2 and cost_of(r.calls[0]) == cost_of(r.calls[1]) == 5


def test_right_password_passes_and_the_dummy_never_does() -> None:
    check, _ = passwords([account("alice", b"right", 4)])
    assert check.verify("alice", "right") is True
    assert check.verify("nobody", "not a password") is False
    assert check("alice", "right").result is True  # the Deferred of the injected thread


def test_dummy_is_made_once_and_again_only_when_the_cost_changes() -> None:
    check, r = passwords([account("alice", b"a", 4)])
    assert r.hashed == [4]
    check.reconfigure([account("alice", b"a", 4), account("bob", b"b", 4)])
    assert r.hashed == [4]  # same cost: the dummy is kept
    check.reconfigure([account("carol", b"c", 5)])
    assert r.hashed == [4, 5]
    assert check.verify("alice", "a") is False  # alice is gone after the reload
    assert check.verify("carol", "c") is True
