"""BDAT (RFC 3030 CHUNKING): the message in counted chunks, from the first to the LAST one.

``BDAT n [LAST]`` is followed by exactly ``n`` octets, which are never read as commands, even
when the command is refused (no transaction, no recipient, bad state): the chunk is consumed,
then answered.  A chunk's octets go through a session ``Stream`` straight into the spool file
(``queue.incoming.Incoming``, which spills to disk), so memory does not grow with ``n`` (a
``BDAT 999999999999`` allocates nothing).  The idle timer restarts whenever chunk octets
arrive (there are no lines to count from).

What is stored is what DATA stores for the same message (``messagetext.MessageText`` does
both): no dot-unstuffing (BDAT has no dots to remove), our Received header on top, the same
limits (``max_message_size``: ``552 5.3.4`` as soon as the declared chunk sizes pass it, the
chunk consumed and not stored; ``max_received_headers``: ``554 5.4.0``), the same policy for a
bare CR or LF (``554 5.6.0``: refused, never stored or normalised), an empty line before text
without a header section, a CRLF after a last line that has none.  The line-length limit of
DATA does not apply.  Any refusal ends the transaction: the chunks a client pipelined after it
are consumed and answered ``503 5.5.1`` (RFC 3030 2: "the transaction should be considered
failed").  Non-LAST chunks answer ``250 2.0.0 <n> octets received``; the LAST one goes through
DATA's commit (``message.MessageIntake.commit``): ``250`` only once message and envelope are
durable, any local failure 4xx.  DATA after BDAT in one transaction, and RCPT after BDAT, are
``503 5.5.1``; BDAT after DATA cannot happen (the end of data ends the transaction).
BINARYMIME is not offered.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from mxbackup import replies
from mxbackup.inbound.message import MessageIntake
from mxbackup.inbound.messagetext import MessageText

if TYPE_CHECKING:
    from mxbackup.inbound.session import Result, Session
    from mxbackup.inbound.transaction import Transaction
    from mxbackup.queue.spool import Incoming
    from mxbackup.replies import Reply

_BDAT = re.compile(r"([0-9]{1,20})(?: +(LAST))?\Z", re.I)


class Chunking:
    def __init__(self, session: Session) -> None:
        self.session = session
        self.intake = MessageIntake(session)
        self.txn: Transaction | None = None  # the transaction whose message is open
        self.incoming: Incoming | None = None
        self.text: MessageText | None = None
        self.filter: Any = None  # the forged Authentication-Results filter, if any

    def bdat(self, rest: str) -> Result:
        s = self.session
        m = _BDAT.match(rest)
        if m is None:
            s.error(replies.BAD_BDAT_SYNTAX)
            return None
        size, last = int(m[1]), m[2] is not None
        txn = s.transaction
        if self.txn is not txn:
            self.drop()  # only if the session's ``ended`` did not see the transaction go
        refusal: Reply | None = None
        if txn is None:
            refusal = replies.NEED_MAIL_FOR_BDAT
        elif not txn.recipients:
            refusal = replies.NO_VALID_RCPT
        elif self.text is None:
            self._open(txn)
        text = self.text
        if text is not None and text.size + size > s.policy.server.max_message_size:
            text.fail(replies.MESSAGE_TOO_BIG.format(s.policy.server.max_message_size))
        chunk = Chunk(self, size, last, refusal)
        if size == 0:
            return chunk.end()
        s.read_stream(chunk)
        return None

    def _open(self, txn: Transaction) -> None:
        server = self.session.policy.server
        txn.chunked = True
        self.txn = txn
        self.incoming = self.intake.open(txn)
        write, self.filter = self.intake.stream_for(txn, self.incoming)
        self.text = MessageText(
            write,
            server.max_message_size,
            server.max_received_headers,
            check_newlines=True,
        )

    def take(self, data: bytes) -> None:
        """Octets of a chunk of the open message."""
        text = self.text
        if text is not None and text.error is None:
            text.feed(data)

    def chunk_done(self, chunk: Chunk) -> Result:
        s = self.session
        if chunk.refusal is not None:
            s.error(chunk.refusal)
            return None
        text, incoming, txn, found = self.text, self.incoming, self.txn, self.filter
        assert text is not None and incoming is not None and txn is not None
        if chunk.last:
            text.finish()
        elif text.error is None:
            s.reply(replies.CHUNK_RECEIVED.format(chunk.size))
            return None
        self.txn = self.incoming = self.text = self.filter = None
        s.transaction = None
        if text.error is not None:
            self.intake.refuse(incoming, txn, text.error, text.size)
            return None
        return self.intake.commit(incoming, txn, found)

    def ended(self, txn: Transaction) -> None:
        """``txn`` is over: its open message, if any, is dropped."""
        if self.txn is txn:
            self.drop()

    def drop(self) -> None:
        """Forget the open message, if any (its transaction ended, the connection is lost)."""
        if self.incoming is not None:
            self.incoming.abort()
        self.txn = self.incoming = self.text = self.filter = None


class Chunk:
    """The session's ``Stream`` for one chunk: exactly ``size`` octets, then ``end``."""

    def __init__(self, owner: Chunking, size: int, last: bool, refusal: Reply | None) -> None:
        self.owner = owner
        self.size = size
        self.last = last
        self.refusal = refusal  # answered once the chunk is consumed; nothing of it is kept
        self.remaining = size

    def feed(self, data: bytes) -> tuple[int, bool]:
        take = data if len(data) <= self.remaining else data[: self.remaining]
        self.remaining -= len(take)
        if self.refusal is None:
            self.owner.take(take)
        self.owner.session.resetTimeout()
        return len(take), self.remaining == 0

    def end(self) -> Result:
        return self.owner.chunk_done(self)

    def abort(self) -> None:
        self.owner.drop()
