"""Inbound STARTTLS against clients nobody here wrote: Go's crypto/tls (a tiny program built
once per session with Debian's golang-go) and ``openssl s_client`` for each offered group,
refused old suites, and the ``compatible`` profile."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from helpers import Twistd, base_config, write_config

GO_CLIENT = r"""
package main

import (
	"crypto/tls"
	"fmt"
	"net/smtp"
	"os"
)

func main() {
	c, err := smtp.Dial(os.Args[1])
	if err != nil { fmt.Println("dial:", err); os.Exit(2) }
	if err := c.Hello("client.example"); err != nil { fmt.Println("hello:", err); os.Exit(2) }
	cfg := &tls.Config{ServerName: "mx2.example.net", InsecureSkipVerify: true}
	switch os.Args[2] {
	case "tls12":
		cfg.MaxVersion = tls.VersionTLS12
	case "alpn": // what Go programs built for HTTP send; testssl's "go 1.17" does too
		cfg.NextProtos = []string{"h2", "http/1.1"}
	}
	if err := c.StartTLS(cfg); err != nil { fmt.Println("starttls:", err); os.Exit(1) }
	st, _ := c.TLSConnectionState()
	fmt.Printf("OK %x %s\n", st.Version, tls.CipherSuiteName(st.CipherSuite))
	c.Quit()
}
"""


def make_pair(directory: Path, kind: str) -> tuple[str, str]:
    new_key = ["-newkey", "rsa:2048"] if kind == "rsa" else ["-newkey", "ec"]
    params = [] if kind == "rsa" else ["-pkeyopt", "ec_paramgen_curve:P-256"]
    cert, key = directory / f"{kind}.pem", directory / f"{kind}.key"
    subprocess.run(
        ["openssl", "req", "-x509", *new_key, *params, "-nodes", "-days", "2"]
        + ["-subj", "/CN=mx2.example.net", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    return str(cert), str(key)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[str, str]]:
    if shutil.which("openssl") is None:
        pytest.skip("no openssl command")
    directory = tmp_path_factory.mktemp("certs")
    return {kind: make_pair(directory, kind) for kind in ("rsa", "ec")}


def start(tmp: Path, certs: dict[str, tuple[str, str]], profile: str | None) -> Twistd:
    tls = {"certificate": certs["rsa"][0], "key": certs["rsa"][1]}
    tls.update(extra_certificate=certs["ec"][0], extra_key=certs["ec"][1])
    if profile:
        tls["profile"] = profile
    return Twistd(write_config(tmp, base_config(tmp, tls=tls)), tmp / "twistd.log").start()


@pytest.fixture(scope="module")
def server(tmp_path_factory, certs):
    t = start(tmp_path_factory.mktemp("tls"), certs, None)  # the default profile
    yield t
    t.stop()


@pytest.fixture(scope="module")
def compatible(tmp_path_factory, certs):
    t = start(tmp_path_factory.mktemp("tlsc"), certs, "compatible")
    yield t
    t.stop()


@pytest.fixture(scope="session")
def go_client(tmp_path_factory: pytest.TempPathFactory) -> str:
    go = shutil.which("go")
    if go is None:
        pytest.skip("no Go toolchain (Debian: golang-go)")
    directory = tmp_path_factory.mktemp("goclient")
    (directory / "main.go").write_text(GO_CLIENT)
    (directory / "go.mod").write_text("module goclient\n\ngo 1.17\n")
    env = {"HOME": str(directory), "GOCACHE": str(directory / "cache"), "PATH": "/usr/bin:/bin"}
    env["GOFLAGS"] = "-mod=mod"
    subprocess.run(
        [go, "build", "-o", "client", "."], cwd=directory, env=env, check=True, timeout=300
    )
    return str(directory / "client")


def s_client(port: int, *args: str) -> str:
    done = subprocess.run(
        ["openssl", "s_client", "-starttls", "smtp", "-connect", f"127.0.0.1:{port}", *args],
        input=b"QUIT\r\n",
        capture_output=True,
        timeout=20,
    )
    return (done.stdout + done.stderr).decode(errors="replace")


@pytest.mark.parametrize("mode", ["default", "tls12", "alpn"])
def test_go_client_connects(server, go_client, mode: str) -> None:
    done = subprocess.run(
        [go_client, f"127.0.0.1:{server.port}", mode], capture_output=True, timeout=20
    )
    out = done.stdout.decode()
    assert done.returncode == 0 and out.startswith("OK "), out + done.stderr.decode()
    version, suite = out.split()[1:3]
    if mode == "tls12":
        assert version == "303" and suite.startswith("TLS_ECDHE_") and "GCM" in suite
    else:
        assert version == "304"


@pytest.mark.parametrize("group", ["X25519", "P-256", "P-384", "X448", "P-521"])
@pytest.mark.parametrize("version", ["-tls1_2", "-tls1_3"])
def test_each_group_connects(server, group: str, version: str) -> None:
    out = s_client(server.port, version, "-groups", group)
    assert "Cipher is TLS_" in out or "Cipher is ECDHE-" in out, out
    assert "Server Temp Key: " in out and "DH, " not in out.split("Server Temp Key: ")[1][:4]


@pytest.mark.parametrize("cipher", ["AES128-SHA", "AES256-GCM-SHA384", "ECDHE-RSA-AES128-SHA"])
def test_static_rsa_and_cbc_are_refused(server, compatible, cipher: str) -> None:
    out = s_client(server.port, "-tls1_2", "-cipher", cipher)
    assert "Cipher is (NONE)" in out and "handshake failure" in out, out
    out = s_client(compatible.port, "-tls1_2", "-cipher", cipher)
    assert f"Cipher is {cipher}" in out, out


def test_tls11_only_with_compatible(server, compatible) -> None:
    old = ("-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0")
    assert "Cipher is (NONE)" in s_client(server.port, *old)
    assert "TLSv1.1" in s_client(compatible.port, *old)


def test_ecdsa_and_rsa_certificates_are_both_served(server) -> None:
    rsa = s_client(server.port, "-tls1_2", "-sigalgs", "RSA-PSS+SHA256:RSA+SHA256")
    ecdsa = s_client(server.port, "-tls1_2", "-sigalgs", "ECDSA+SHA256")
    assert "Peer signature type: " in rsa and "RSA" in rsa.split("Peer signature type: ")[1][:8]
    assert "Peer signature type: ECDSA" in ecdsa, ecdsa
