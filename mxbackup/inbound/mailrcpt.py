"""MAIL and RCPT: the transaction's sender, parameters and recipients.

Paths are parsed strictly (``address``; UTF-8 addresses only in a transaction that MAIL began
with SMTPUTF8), parameters by ``esmtpparams`` (DSN's kept on the transaction and its
recipients for the envelope); the decisions are the session's seam,
``validateFrom`` and ``validateTo`` (pitfall 8: routing tricks are refused by the RCPT chain,
not silently stripped).  A refused recipient is logged, one line each, for operators.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.logger import Logger

from mxbackup import replies
from mxbackup.inbound.address import (
    PathError,
    parse_params,
    parse_path,
    split_command_argument,
)
from mxbackup.inbound.esmtpparams import mail_params, rcpt_params
from mxbackup.inbound.rcpt.decision import Accept, Postpone, when_decided
from mxbackup.inbound.transaction import Transaction
from mxbackup.queue.envelope import Recipient
from mxbackup.replies import Reply

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred

    from mxbackup.inbound.session import Session

log = Logger(namespace="mxbackup.smtp_in")


def path_refusal(error: PathError, fallback: Reply) -> Reply:
    """The reply to a malformed path: 553 5.6.7 for UTF-8 (no SMTPUTF8), else ``fallback``."""
    if error.kind == "utf8":
        return replies.UTF8_NEEDS_SMTPUTF8
    return fallback.format(error) if "{}" in fallback.text else fallback


class MailRcpt:
    def __init__(self, session: Session) -> None:
        self.session = session

    def _argument(
        self, refusal: Reply | None, rest: str, keyword: str, syntax: Reply, utf8: bool = False
    ) -> tuple[str, dict[str, str | None]] | None:
        """MAIL's or RCPT's path and parameters, unless ``refusal`` (out of sequence) or a
        syntax error is answered instead: then None."""
        if refusal is None:
            try:
                path, param_text = split_command_argument(rest, keyword)
                return path, parse_params(param_text, utf8)
            except PathError as e:
                refusal = replies.REPEATED_PARAMETER.format(e) if e.kind == "repeat" else syntax
        self.session.error(refusal)
        return None

    # -- MAIL ----------------------------------------------------------------------------
    def mail(self, rest: str) -> Deferred[Any] | None:
        s = self.session
        out_of_order = replies.NESTED_MAIL if s.transaction is not None else None
        parsed = self._argument(out_of_order, rest, "FROM:", replies.BAD_MAIL_SYNTAX)
        if parsed is None:
            return None
        path, params = parsed
        refusal, params = mail_params(params, s.policy.server.max_message_size)
        if refusal is not None:
            s.error(refusal)
            return None
        try:
            sender = parse_path(path, allow_null=True, utf8="SMTPUTF8" in params)
        except PathError as e:
            s.error(path_refusal(e, replies.BAD_SENDER_ADDRESS))
            return None
        txn = Transaction(s.client_ip, s.helo, s.authenticated, sender, params)
        return when_decided(s.validateFrom(txn), self._mail_decided, txn)

    def _mail_decided(self, decision: Any, transaction: Transaction) -> None:
        if isinstance(decision, Accept):
            self.session.transaction = transaction
            self.session.reply(replies.SENDER_OK)
        else:
            self.session.error(decision)

    # -- RCPT ----------------------------------------------------------------------------
    def rcpt(self, rest: str) -> Deferred[Any] | None:
        s = self.session
        txn = s.transaction
        out_of_order = replies.NEED_MAIL if txn is None else None
        if txn is not None and txn.chunked:
            out_of_order = replies.RCPT_AFTER_BDAT  # our Received header is written already
        utf8 = txn is not None and txn.utf8
        parsed = self._argument(out_of_order, rest, "TO:", replies.BAD_RCPT_SYNTAX, utf8)
        if parsed is None:
            return None
        path, params = parsed
        refusal, params = rcpt_params(params, utf8)
        if refusal is not None:
            s.error(refusal)
            return None
        try:
            mailbox = parse_path(path, allow_null=False, utf8=utf8)
        except PathError as e:
            self._refuse(path_refusal(e, replies.BAD_ADDRESS), path[1:-1])
            return None
        assert mailbox is not None
        # An address carrying routing is logged as sent: the routing is the point.
        shown = path[1:-1] if mailbox.routing is not None else str(mailbox)
        return when_decided(s.validateTo(mailbox), self._rcpt_decided, txn, shown, params)

    def _rcpt_decided(
        self, decision: Any, transaction: Transaction, shown: str, params: dict[str, str | None]
    ) -> None:
        if isinstance(decision, Recipient):
            decision.params = params
            transaction.add(decision)
            self.session.reply(replies.RECIPIENT_OK)
        elif isinstance(decision, Postpone):
            self.session.reply(decision.reply)
        else:
            self._refuse(decision, shown)

    def _refuse(self, reply: Reply, rcpt: str) -> None:
        s = self.session
        s.factory.stats.refused[str(reply.code)] += 1
        log.info(
            "refused rcpt=<{rcpt}> from=<{sender}> client={ip} code={code} reason={reason}",
            rcpt=rcpt.encode("ascii", "backslashreplace").decode(),
            sender=s.transaction.sender_text if s.transaction is not None else "",
            ip=s.client_ip,
            code=reply.code,
            reason=reply.message,
        )
        s.error(reply)
