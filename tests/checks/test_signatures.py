"""signatures: the key names a message needs, read from its header alone; OpenSSL's RSA
signature is dkimpy's, byte for byte."""

from __future__ import annotations

import hashlib

import dkim.crypto

from dnsserver import rsa_key
from mxbackup.checks.signatures import _rsa_sign, key_names


def test_key_names_from_dkim_and_arc_fields() -> None:
    message = (
        b"DKIM-Signature: v=1; a=rsa-sha256; d=a.test;\r\n s=one; b=xyz\r\n"
        b"ARC-Seal: i=1; a=rsa-sha256; cv=none; d=b.test; s=two; b=abc\r\n"
        b"ARC-Message-Signature: i=1; d=b.test; s=two; b=abc\r\n"
        b"Subject: x\r\n\r\nDKIM-Signature: d=body.test; s=no\r\n"
    )
    assert key_names(message) == ["one._domainkey.a.test", "two._domainkey.b.test"]


def test_openssl_signature_is_dkimpys() -> None:
    pem, _ = rsa_key()
    pk = dkim.crypto.parse_pem_private_key(pem)
    slow = dkim.crypto.RSASSA_PKCS1_v1_5_sign(hashlib.sha256(b"abc"), pk)
    assert _rsa_sign(hashlib.sha256(b"abc"), pk) == bytes(slow)
