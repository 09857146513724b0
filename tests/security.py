"""Helpers for the security tests: tokens, keys and a self-signed certificate.

Everything here is real: tokens are signed with PyJWT, keys and certificates
are generated with ``cryptography``.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import ipaddress
import json
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from websockets.exceptions import InvalidStatus
from websockets.typing import Origin

from chimera.auth.principal import Scope, parse_scopes
from chimera.auth.tokens import mint
from tests.conftest import ws_connect

SECRET = "test-secret-that-is-long-enough-for-hs256-0123456789"
ALL = "submit,read,cancel"


def token(sub: str = "alice", scope: str = ALL, key: Any = SECRET, **claims: Any) -> str:
    """A token signed with ``key`` (the test secret by default)."""
    scopes: frozenset[Scope] = parse_scopes(scope)
    return mint(key, sub=sub, scopes=scopes, **claims)


async def rebound_handshake_status(port: int, name: str, job_id: str) -> int:
    """The HTTP status of a WebSocket handshake to ``port`` made the way a browser
    makes it after DNS rebinding: ``name`` (an attacker's host:port that resolves to
    127.0.0.1) as both Host and Origin."""
    sock = socket.create_connection(("127.0.0.1", port))
    try:
        await ws_connect(f"ws://{name}/ws/orchestrate/{job_id}", sock=sock,
                         origin=Origin(f"http://{name}"))
    except InvalidStatus as refused:
        return refused.response.status_code
    raise AssertionError(f"a handshake with Host {name!r} was accepted")


def bearer(value: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {value}"),)


def pem_public(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def pem_private(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@dataclass(frozen=True)
class Certificate:
    cert: Path
    key: Path


def self_signed(directory: Path) -> Certificate:
    """A certificate for localhost and 127.0.0.1, valid for a day, and its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    paths = Certificate(directory / "cert.pem", directory / "key.pem")
    paths.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths.key.write_bytes(pem_private(key))
    return paths


def hs256_by_hand(claims: dict[str, Any], key: bytes) -> str:
    """An HS256 token with any claims and key: PyJWT refuses to sign some (a PEM key,
    a non-string ``iss``); an attacker with the key, or a buggy issuer, would not."""

    def part(obj: dict[str, Any]) -> bytes:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=")

    signing_input = part({"alg": "HS256", "typ": "JWT"}) + b"." + part(claims)
    signature = hmac.new(key, signing_input, hashlib.sha256).digest()
    return (signing_input + b"." + base64.urlsafe_b64encode(signature).rstrip(b"=")).decode()
