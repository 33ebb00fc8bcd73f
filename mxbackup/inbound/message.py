"""DATA: the message from ``354`` to the ``250`` that means "queued".

One spool file per transaction (pitfall 10), our Received header on top, the body through
``datastream.DataReader`` (end of data, limits, smuggling defence).  The 250 is sent only
after the spool's commit is durable (invariant 1); any local failure answers 451/452 and
keeps nothing (pitfall 1, invariant 2).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.logger import Logger
from twisted.python.failure import Failure

from mxbackup import replies
from mxbackup.inbound.datastream import DataReader
from mxbackup.inbound.received import received_header
from mxbackup.inbound.starttls import tls_description
from mxbackup.queue.envelope import Envelope
from mxbackup.queue.spool import Incoming, is_out_of_space

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred

    from mxbackup.inbound.session import Session
    from mxbackup.inbound.transaction import Transaction
    from mxbackup.replies import Reply

log = Logger(namespace="mxbackup.smtp_in")


class MessageIntake:
    def __init__(self, session: Session) -> None:
        self.session = session
        self.incoming: Incoming | None = None
        self.reader: DataReader | None = None
        self.filter: Any = None

    def data(self, rest: str) -> None:
        s = self.session
        txn = s.transaction
        if rest:
            s.error(replies.DATA_ARGUMENT)
        elif txn is None:
            s.error(replies.NEED_MAIL_FOR_DATA)
        elif txn.chunked:
            s.error(replies.DATA_AFTER_BDAT)
        elif not txn.recipients:
            s.error(replies.NO_VALID_RCPT)
        else:
            self._start(txn)

    def _start(self, txn: Transaction) -> None:
        s = self.session
        incoming = self.open(txn)
        self.incoming = incoming
        server = s.policy.server
        write, self.filter = self.stream_for(txn, incoming)
        self.reader = DataReader(write, server.max_message_size, server.max_received_headers)
        s.read_stream(self)
        s.reply(replies.START_DATA)

    def stream_for(
        self, txn: Transaction, incoming: Incoming
    ) -> tuple[Callable[[bytes], Any], Any]:
        """Where the message text goes (DATA, BDAT), and the filter to hand to ``commit``:
        RFC 8601 section 5, no Authentication-Results in our name from outside."""
        found = self.session.policy.checks.forged_results_filter(txn, incoming.write)
        return (incoming.write, None) if found is None else (found.write, found)

    def open(self, txn: Transaction) -> Incoming:
        """A spool file for ``txn``'s message, our Received header already in it (DATA, BDAT)."""
        s = self.session
        incoming = s.factory.spool.incoming()
        incoming.write(
            received_header(
                helo=s.helo,
                client_ip=s.client_ip,
                hostname=s.policy.server.hostname,
                queue_id=incoming.id,
                tls=tls_description(s.transport) if s.tls else None,
                authenticated=s.authenticated,
                recipients=[r.address for r in txn.recipients],
                now=s.factory.clock.seconds(),
                utf8=txn.utf8,
            )
        )
        return incoming

    # -- the session's Stream ------------------------------------------------------------
    def feed(self, data: bytes) -> tuple[int, bool]:
        assert self.reader is not None
        return self.reader.feed(data)

    def abort(self) -> None:
        if self.incoming is not None:
            self.incoming.abort()
        self.incoming = self.reader = self.filter = None

    def end(self) -> Deferred[Any] | None:
        s = self.session
        incoming, reader, txn, found = self.incoming, self.reader, s.transaction, self.filter
        assert incoming is not None and reader is not None and txn is not None
        self.incoming = self.reader = self.filter = None
        s.transaction = None
        if reader.error is not None:
            self.refuse(incoming, txn, reader.error, reader.size)
            return None
        return self.commit(incoming, txn, found)

    def refuse(self, incoming: Incoming, txn: Transaction, error: Reply, size: int) -> None:
        """The message is refused (``error``): nothing of it is kept."""
        s = self.session
        incoming.abort()
        log.info(
            "refused message from=<{sender}> client={ip} size={size} code={code} reason={reason}",
            sender=txn.sender_text,
            ip=s.client_ip,
            size=size,
            code=error.code,
            reason=error.message,
        )
        s.error(error)

    def commit(self, incoming: Incoming, txn: Transaction, found: Any = None) -> Deferred[Any]:
        """Queue the message (DATA, BDAT): the end-of-data checks first (DKIM, ARC,
        Authentication-Results), then the 250 only once message and envelope are durable
        (invariant 1), else a 4xx.  ``found``: the filter from ``stream_for``."""
        if found is not None:
            found.close()
        checked = self.session.policy.checks.at_end(incoming, txn)
        if checked is None:
            return self._store(incoming, txn)
        return checked.addCallback(lambda _: self._store(incoming, txn))

    def _store(self, incoming: Incoming, txn: Transaction) -> Deferred[Any]:
        s = self.session
        envelope = Envelope(
            id=incoming.id,
            sender=txn.sender_text,
            recipients=txn.recipients,
            received_at=s.factory.clock.seconds(),
            size=incoming.size,
            client_ip=s.client_ip,
            helo=txn.helo or "",
            params=dict(txn.params),
        )
        d = s.factory.spool.commit(incoming, envelope)
        return d.addCallbacks(self._committed, self._commit_failed, callbackArgs=(envelope,))

    def _committed(self, _: object, envelope: Envelope) -> None:
        s = self.session
        s.reply(replies.QUEUED.format(envelope.id))  # first: the client waits for nothing else
        log.info(
            "accepted id={id} from=<{sender}> size={size} nrcpt={nrcpt} client={ip} tls={tls}",
            id=envelope.id,
            sender=envelope.sender,
            size=envelope.size,
            nrcpt=len(envelope.recipients),
            ip=s.client_ip,
            tls=s.tls,
        )
        s.factory.stats.accepted += 1
        s.clear_errors()
        try:
            s.factory.wakeup(envelope)
        except Exception:  # noqa: BLE001 - the 250 is sent; never a second reply
            log.failure("wakeup failed for id={id}", id=envelope.id)

    def _commit_failed(self, failure: Failure) -> None:
        self._local_failure(failure.value)

    def _local_failure(self, error: BaseException) -> None:
        """A local problem (disk full, I/O error; a write error while the message arrived
        comes back from ``Spool.commit``, which removed the file): always 4xx, never 5xx."""
        s = self.session
        reply = replies.INSUFFICIENT_SPACE if is_out_of_space(error) else replies.QUEUE_WRITE_ERROR
        log.error(
            "queue write failed client={ip} code={code} error={error}",
            ip=s.client_ip,
            code=reply.code,
            error=str(error),
        )
        s.reply(reply)
