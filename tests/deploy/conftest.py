"""Helpers for the production deployment files in deploy/."""

from __future__ import annotations

import datetime
import json
import os
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from tests.harness import Harness

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


@dataclass(frozen=True)
class Tls:
    ca: Path
    cert: Path
    key: Path


def make_tls(directory: Path, host: str = "127.0.0.1") -> Tls:
    """A throwaway CA and a server certificate for `host` (an IP address or a DNS name), PEM files."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)
    # fmt: off
    ca_key_usage = x509.KeyUsage(
        digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
        key_encipherment=False, data_encipherment=False, key_agreement=False, encipher_only=False,
        decipher_only=False,
    )
    # fmt: on
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "botconsole test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(ca_key_usage, critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    try:
        alt: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        alt = x509.DNSName(host)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([alt]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    tls = Tls(ca=directory / "ca.pem", cert=directory / "fullchain.pem", key=directory / "privkey.pem")
    tls.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    tls.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM) + tls.ca.read_bytes())
    tls.key.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    os.chmod(tls.key, 0o600)
    return tls


@pytest.fixture
def tls(tmp_path: Path) -> Tls:
    return make_tls(tmp_path / "tls")


# -- PostgreSQL as its superuser --------------------------------------------------------------


def pg_superuser_params(services: Harness) -> dict[str, Any]:
    """Connection parameters of the test cluster's superuser (the embedded server's, from its 0600 file).

    With your own PostgreSQL (DATABASE_URL set), name a role that may create roles in
    BOTCONSOLE_TEST_PG_ADMIN_URL.
    """
    from django.db import connection

    admin_url = os.environ.get("BOTCONSOLE_TEST_PG_ADMIN_URL")
    if admin_url:
        return {"conninfo": admin_url}
    passwords = services.root / "postgres" / "passwords.json"
    if services.services is None or not passwords.exists():
        pytest.fail(
            "these tests create database roles: with your own PostgreSQL, set BOTCONSOLE_TEST_PG_ADMIN_URL "
            "to a role with CREATEROLE"
        )
    db = connection.settings_dict
    return {
        "host": db["HOST"],
        "port": db["PORT"],
        "user": "postgres",
        "password": json.loads(passwords.read_text())["superuser"],
    }


def pg_connect(params: dict[str, Any], dbname: str) -> psycopg.Connection[Any]:
    if "conninfo" in params:
        return psycopg.connect(params["conninfo"], dbname=dbname, autocommit=True)
    return psycopg.connect(**params, dbname=dbname, autocommit=True)


@pytest.fixture
def pg_admin(services: Harness) -> Iterator[Callable[[str], psycopg.Connection[Any]]]:
    """Open a superuser connection to a database of the test cluster (closed after the test)."""
    params = pg_superuser_params(services)
    opened: list[psycopg.Connection[Any]] = []

    def connect(dbname: str) -> psycopg.Connection[Any]:
        conn = pg_connect(params, dbname)
        opened.append(conn)
        return conn

    yield connect
    for conn in opened:
        conn.close()


@dataclass(frozen=True)
class Role:
    name: str
    password: str


@pytest.fixture
def make_role(pg_admin: Callable[[str], psycopg.Connection[Any]]) -> Iterator[Callable[..., Role]]:
    """Create throwaway login roles on the test cluster; each is dropped with what it was granted."""
    from django.db import connection

    made: list[Role] = []

    def make(prefix: str, attributes: str = "NOINHERIT") -> Role:
        role = Role(f"{prefix}_{secrets.token_hex(4)}", secrets.token_urlsafe(18))
        conn = pg_admin("postgres")
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN " + attributes + " PASSWORD {}").format(
                sql.Identifier(role.name), sql.Literal(role.password)
            )
        )
        made.append(role)
        return role

    yield make
    test_db = connection.settings_dict["NAME"]
    for role in made:
        for dbname in (test_db, "postgres"):
            pg_admin(dbname).execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role.name)))
        pg_admin("postgres").execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role.name)))
