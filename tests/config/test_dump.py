"""``mxbackup config``: the effective configuration and the defaults, as YAML."""

from __future__ import annotations

import subprocess
import sys

import bcrypt
import yaml

from helpers import ROOT, base_config, write_config
from mxbackup import config as config_module
from mxbackup.config import dump
from mxbackup.config.reader import walk_keys

HASH = bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=4)).decode()


def secret_config(tmp_path):
    data = base_config(tmp_path)
    data["accounts"] = [{"username": "u", "password_hash": HASH}]
    data["routes"][0]["authentication"] = {"username": "b", "password": "s3cret-pw"}
    data["routes"][0]["target_host"] = ["127.0.0.1", "[::1]:2526"]
    data["delivery"] = {"dns_servers": ["127.0.0.1:5353"]}
    return data


def test_effective_has_every_key_and_reads_back_the_same(tmp_path):
    config = config_module.parse(secret_config(tmp_path), "test.yaml")
    shown = dump.effective(config)
    again = yaml.safe_load(dump.to_yaml(shown, "header"))
    # the masked secrets put back, it is the same configuration
    again["accounts"][0]["password_hash"] = HASH
    again["routes"][0]["authentication"]["password"] = "s3cret-pw"
    # '' is "not set" (the documented fallback applies), which a file cannot say
    for section in (again["server"], again["delivery"]):
        for key in [k for k, v in section.items() if v == ""]:
            del section[key]
    assert config_module.parse(again, "test.yaml") == config
    flat = set()

    def walk(node, path):
        if isinstance(node, dict):
            for k, v in node.items():
                flat.add(f"{path}.{k}" if path else k)
                walk(v, f"{path}.{k}" if path else k)
        elif isinstance(node, list):
            for item in node:
                walk(item, f"{path}[]")

    walk(shown, "")
    # every key the reader knows is shown, where its section is there
    expected = {p for p, _, _ in walk_keys(config_module.Config)}
    expected -= {"routes[].authentication.password_file", "accounts[].password"}
    missing = {
        p
        for p in expected - flat
        if not p.startswith(
            (
                "manhole.",
                "metrics.",
                "server.tls.",
                "checks.arc.",
                "checks.greylisting.",
                "checks.dnsbl[].",
                "routes[].verify_recipients.",
            )
        )  # fmt: skip
    }
    assert missing == set()


def test_secrets_are_masked(tmp_path):
    text = dump.to_yaml(dump.effective(config_module.parse(secret_config(tmp_path), "t")), "h")
    assert "s3cret-pw" not in text and HASH not in text and "$2b$" not in text
    assert text.count(dump.MASK) == 2
    assert dump._value("redis://:hunter2@db:6379/0") == "redis://:***@db:6379/0"


def test_defaults_alone():
    shown = dump.defaults()
    assert shown["server"]["hostname"] == dump.REQUIRED
    assert shown["server"]["max_message_size"] == 26214400
    assert shown["routes"][0]["retries"] == 100
    assert shown["ip_ranges"][0]["allow_etrn"] is True
    assert shown["manhole"] is None


def test_the_command(tmp_path):
    path = write_config(tmp_path, secret_config(tmp_path))
    run = [sys.executable, "-m", "mxbackup.cli", "config"]
    out = subprocess.run([*run, "--config", str(path)], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0 and "s3cret-pw" not in out.stdout
    assert yaml.safe_load(out.stdout)["delivery"]["probe_interval"] == 30
    out = subprocess.run([*run, "--defaults"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0 and "max_queue_lifetime: 0" in out.stdout
