"""``session.Session`` and ``session.FactoryView`` say exactly what the collaborators and the
server use (read from their sources with ``ast``), and ``SMTPServer`` and ``SMTPFactory``
provide it: no type checker runs here, so this keeps the Protocols from drifting."""

from __future__ import annotations

import ast
from pathlib import Path

from mxbackup import inbound
from mxbackup.inbound.message import MessageIntake
from mxbackup.inbound.session import Allowed, FactoryView, Offered, Session, Stream

SOURCES = Path(inbound.__file__).parent
COLLABORATORS = ("basic", "chunking", "etrn", "mailrcpt", "message", "sasl", "starttls")


def members(protocol: type) -> set[str]:
    return set(protocol.__annotations__) | {n for n in vars(protocol) if not n.startswith("_")}


def _is_session(node: ast.expr) -> bool:
    """``s`` (always ``s = self.session`` in the collaborators) or ``self.session``."""
    if isinstance(node, ast.Name):
        return node.id == "s"
    return isinstance(node, ast.Attribute) and node.attr == "session"


def _is_factory(node: ast.expr, owner: str) -> bool:
    """``<session>.factory`` in a collaborator, ``self.factory`` in the server."""
    if not (isinstance(node, ast.Attribute) and node.attr == "factory"):
        return False
    if owner == "server":
        return isinstance(node.value, ast.Name) and node.value.id == "self"
    return _is_session(node.value)


def used(module: str) -> tuple[set[str], set[str]]:
    """What ``module`` uses of its session and of its factory."""
    of_session, of_factory = set(), set()
    for node in ast.walk(ast.parse((SOURCES / f"{module}.py").read_text())):
        if isinstance(node, ast.Attribute):
            if module != "server" and _is_session(node.value):
                of_session.add(node.attr)
            if _is_factory(node.value, module):
                of_factory.add(node.attr)
    return of_session, of_factory


def test_session_is_what_the_collaborators_use():
    uses = set().union(*(used(m)[0] for m in COLLABORATORS))
    assert uses == members(Session)


def test_factory_view_is_what_the_server_and_collaborators_use():
    uses = set().union(*(used(m)[1] for m in (*COLLABORATORS, "server")))
    assert uses == members(FactoryView)


def test_the_server_and_factory_provide_them(h):
    server = h.connect().proto
    assert {name for name in members(Session) if not hasattr(server, name)} == set()
    assert members(Offered) <= set(dir(server.sasl))
    assert members(Allowed) <= set(dir(server.etrn))
    assert {name for name in members(FactoryView) if not hasattr(h.factory, name)} == set()
    assert members(Stream) <= set(dir(MessageIntake))
