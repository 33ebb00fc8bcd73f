"""The AUTH password check: one bcrypt comparison per attempt, whether the name exists or not.

An unknown user name is compared against a dummy hash of the same bcrypt cost as the
accounts' (the most common cost among them; the highest on a tie), made once when the
accounts are loaded or reloaded: so a failed AUTH takes as long for a name that does not exist
as for one that does, and its timing tells nobody which names are accounts.  (Accounts hashed
at different costs can still be told apart from each other: ``preflight`` warns about it.)

Pure apart from bcrypt: the thread the comparison runs in is injected.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

import bcrypt

MAX_PASSWORD = 72  # bcrypt uses at most this many bytes
DEFAULT_COST = 12  # the dummy's cost when there are no accounts (AUTH is not offered then)

RunInThread = Callable[[Callable[[], bool]], Any]  # -> Deferred[bool]


def cost_of(password_hash: str | bytes) -> int:
    """The cost of a ``$2b$12$...`` hash (the format is checked when the config is read)."""
    text = password_hash.decode("ascii") if isinstance(password_hash, bytes) else password_hash
    return int(text.split("$")[2])


def dummy_cost(hashes: Iterable[str | bytes]) -> int:
    """The most common cost among ``hashes`` (the highest on a tie)."""
    counts = Counter(cost_of(h) for h in hashes)
    if not counts:
        return DEFAULT_COST
    return max(counts, key=lambda cost: (counts[cost], cost))


class Passwords:
    """``check(username, password) -> Deferred[bool]`` for the inbound AUTH exchange."""

    def __init__(
        self,
        accounts: Iterable[Any],
        run_in_thread: RunInThread,
        checkpw: Callable[[bytes, bytes], bool] = bcrypt.checkpw,
        hashpw: Callable[[bytes, bytes], bytes] = bcrypt.hashpw,
    ) -> None:
        self.run_in_thread = run_in_thread
        self.checkpw = checkpw
        self.hashpw = hashpw
        self.hashes: dict[str, bytes] = {}
        self.dummy = b""
        self.reconfigure(accounts)

    def reconfigure(self, accounts: Iterable[Any]) -> None:
        """New accounts (start, reload); the dummy is made again only if its cost changes."""
        hashes = {a.username: a.password_hash for a in accounts}
        cost = dummy_cost(hashes.values())
        if not self.dummy or cost_of(self.dummy) != cost:
            self.dummy = self.hashpw(b"not a password", bcrypt.gensalt(rounds=cost))
        self.hashes = {
            name: h.encode("ascii") if isinstance(h, str) else h for name, h in hashes.items()
        }

    def __call__(self, username: str, password: str) -> Any:
        return self.run_in_thread(lambda: self.verify(username, password))

    def verify(self, username: str, password: str) -> bool:
        """Exactly one bcrypt comparison, against the account's hash or the dummy."""
        stored = self.hashes.get(username)
        candidate = password.encode("utf-8")
        if len(candidate) > MAX_PASSWORD:  # never true: still spend the same time
            self.checkpw(b"x", stored or self.dummy)
            return False
        ok = self.checkpw(candidate, stored or self.dummy)
        return ok and stored is not None
