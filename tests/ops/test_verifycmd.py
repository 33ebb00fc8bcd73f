"""``mxbackup verify list|forget``: the control-socket commands on a real SQLite store, their
dispatch through the control protocol, and the CLI's output."""

from __future__ import annotations

import argparse
import json

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from mxbackup.ops.control import Commands, ControlProtocol
from mxbackup.ops.verifycli import add_verify_parser, route_counts
from mxbackup.ops.verifycmd import verify_commands
from mxbackup.state import open_store
from mxbackup.state.verifycache import VerifyCache


def cache_with_entries(tmp_path):
    clock = Clock()
    clock.advance(1000)
    cache = VerifyCache(open_store(f"sqlite:{tmp_path}/state.sqlite", clock))
    cache.remember("example.com", "Bob@example.com", True, "", 100)
    cache.remember("example.com", "nobody@example.com", False, "5.1.1 <nobody>: unknown", 50)
    cache.remember("other.test", "bob@example.com", True, "", 100)
    return cache


def result(d):
    got: list = []
    d.addBoth(got.append)
    return got[0]


def test_list_and_forget(tmp_path):
    commands = verify_commands(cache_with_entries(tmp_path))
    everything = result(commands["verify_list"]())
    assert [(e["route"], e["address"], e["result"]) for e in everything] == [
        ("example.com", "bob@example.com", "positive"),
        ("example.com", "nobody@example.com", "negative"),
        ("other.test", "bob@example.com", "positive"),
    ]
    assert everything[1]["text"] == "<nobody>: unknown"
    assert everything[1]["expires_at"] == 1050
    assert len(result(commands["verify_list"](route="Other.Test"))) == 1
    assert result(commands["verify_forget"](address="BOB@example.com")) == {"forgotten": 2}
    assert [e["address"] for e in result(commands["verify_list"]())] == ["nobody@example.com"]
    missing = result(commands["verify_forget"](address="bob@example.com"))
    assert "no verification entry" in str(missing.value)


def test_the_control_protocol_runs_registered_commands(tmp_path):
    commands = Commands(None, None, None, None)
    commands.extra.update(verify_commands(cache_with_entries(tmp_path)))
    proto = ControlProtocol(commands)
    transport = StringTransport()
    proto.makeConnection(transport)
    proto.dataReceived(b'{"cmd": "verify_list", "route": "example.com"}\n')
    answer = json.loads(transport.value())
    assert answer["ok"] and len(answer["result"]) == 2


def test_cli_output(capsys):
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    where = argparse.ArgumentParser(add_help=False)
    where.add_argument("--socket")
    asked = []

    def talk(args, cmd, **kw):
        asked.append((cmd, kw))
        if cmd == "verify_forget":
            return 0, {"forgotten": 1}
        return 0, [
            {"route": "example.com", "address": "a@example.com", "result": "positive",
             "text": "", "expires_at": 4e9},
        ]  # fmt: skip

    add_verify_parser(sub, where, talk)
    args = parser.parse_args(["verify", "list", "--route", "example.com"])
    assert args.run(args) == 0
    assert "<a@example.com>" in capsys.readouterr().out
    args = parser.parse_args(["verify", "forget", "a@example.com"])
    assert args.run(args) == 0
    assert asked == [
        ("verify_list", {"route": "example.com"}),
        ("verify_forget", {"address": "a@example.com"}),
    ]


def test_route_counts_for_queue_list():
    messages = [
        {"recipients": [{"route": "example.com", "state": "pending"}] * 2},
        {"recipients": [{"route": "example.com", "state": "delivered"},
                        {"route": None, "state": "pending"}]},
        {"recipients": [{"route": "other.test", "state": "pending"}]},
    ]  # fmt: skip
    assert route_counts(messages) == {"example.com": 1, "other.test": 1}
