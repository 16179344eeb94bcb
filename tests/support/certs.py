"""Certificates for the TLS server tests, made with the ``openssl`` command.

``make_certs(directory)`` writes a small PKI into ``directory`` and returns
a :class:`Certs` of paths (all EC P-256, valid two days):

* ``ca`` / ``ca_key``: a test root CA, the only root the clients trust;
* ``server`` / ``server_key``: for DNS:localhost and IP:127.0.0.1, signed by
  the root directly;
* ``chain`` / ``chain_key``: another certificate for the same names, signed
  by an intermediate CA; ``chain`` holds the leaf then the intermediate, so
  a client that trusts only the root verifies it only if the server sends
  the whole file;
* ``untrusted`` / ``untrusted_key``: self-signed for the same names
  (:func:`support.clientpeers.make_certificate`), trusted by no client;
* ``wrong_name`` / ``wrong_name_key``: signed by the root for DNS:other.test;
* ``client`` / ``client_key``: a client certificate signed by the root,
  subject ``CN=alice,O=roomcast-test`` as RFC 4514 writes it (the DER
  holds O first, then CN);
* ``encrypted_key``: ``server_key`` encrypted (AES-256) with ``password``.

``tls_certs`` is a session-scoped fixture of them: a test module imports its
function (``from support.certs import tls_certs_fixture``) to use it.
"""

import os
import subprocess
from dataclasses import dataclass

import pytest

from .clientpeers import make_certificate

PASSWORD = "s3cret-pass"
SANS = "DNS:localhost,IP:127.0.0.1"

_CA_EXT = (
    "basicConstraints=critical,CA:TRUE\n"
    "keyUsage=critical,keyCertSign,cRLSign\n"
    "subjectKeyIdentifier=hash\n"
    "authorityKeyIdentifier=keyid:always\n"
)


def _leaf_ext(sans: str | None, usage: str) -> str:
    ext = (
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature\n"
        f"extendedKeyUsage={usage}\n"
        "subjectKeyIdentifier=hash\n"
        "authorityKeyIdentifier=keyid:always\n"
    )
    if sans:
        ext += f"subjectAltName={sans}\n"
    return ext


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


def _new_key(path: str) -> None:
    _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", path)


def _self_signed_ca(directory: str, name: str) -> tuple[str, str]:
    cert = os.path.join(directory, f"{name}.pem")
    key = os.path.join(directory, f"{name}.key")
    _new_key(key)
    _openssl(
        "req", "-x509", "-new", "-key", key, "-out", cert, "-days", "2", "-sha256",
        "-subj", f"/O=roomcast-test/CN={name}", "-config", "/dev/null",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        "-addext", "subjectKeyIdentifier=hash",
    )  # fmt: skip
    return cert, key


def _signed(directory: str, name: str, subject: str, issuer: tuple[str, str], ext_text: str) -> tuple[str, str]:
    """A certificate for ``subject`` (an ``openssl -subj`` string) signed by
    ``issuer`` (cert, key) with the extensions ``ext_text``."""
    cert = os.path.join(directory, f"{name}.pem")
    key = os.path.join(directory, f"{name}.key")
    csr = os.path.join(directory, f"{name}.csr")
    ext = os.path.join(directory, f"{name}.ext")
    _new_key(key)
    _openssl("req", "-new", "-key", key, "-out", csr, "-subj", subject, "-config", "/dev/null")
    with open(ext, "w") as f:
        f.write(ext_text)
    serial = str(int.from_bytes(os.urandom(8), "big"))
    _openssl(
        "x509", "-req", "-in", csr, "-CA", issuer[0], "-CAkey", issuer[1], "-set_serial", serial,
        "-days", "2", "-sha256", "-extfile", ext, "-out", cert,
    )  # fmt: skip
    return cert, key


@dataclass(frozen=True)
class Certs:
    directory: str
    ca: str
    ca_key: str
    server: str
    server_key: str
    chain: str
    chain_key: str
    untrusted: str
    untrusted_key: str
    wrong_name: str
    wrong_name_key: str
    client: str
    client_key: str
    encrypted_key: str
    password: str = PASSWORD


def make_certs(directory: str) -> Certs:
    directory = str(directory)
    ca = _self_signed_ca(directory, "ca")
    intermediate = _signed(directory, "intermediate", "/O=roomcast-test/CN=intermediate", ca, _CA_EXT)
    server = _signed(directory, "server", "/CN=localhost", ca, _leaf_ext(SANS, "serverAuth"))
    leaf = _signed(directory, "leaf", "/CN=localhost", intermediate, _leaf_ext(SANS, "serverAuth"))
    chain = os.path.join(directory, "chain.pem")
    with open(chain, "w") as out:
        for part in (leaf[0], intermediate[0]):
            with open(part) as f:
                out.write(f.read())
    untrusted = make_certificate(directory, "untrusted", SANS)
    wrong = _signed(directory, "wrong", "/CN=other.test", ca, _leaf_ext("DNS:other.test", "serverAuth"))
    client = _signed(directory, "alice", "/O=roomcast-test/CN=alice", ca, _leaf_ext(None, "clientAuth"))
    encrypted = os.path.join(directory, "server-encrypted.key")
    _openssl("pkey", "-in", server[1], "-aes256", "-passout", f"pass:{PASSWORD}", "-out", encrypted)
    return Certs(
        directory=directory,
        ca=ca[0],
        ca_key=ca[1],
        server=server[0],
        server_key=server[1],
        chain=chain,
        chain_key=leaf[1],
        untrusted=untrusted[0],
        untrusted_key=untrusted[1],
        wrong_name=wrong[0],
        wrong_name_key=wrong[1],
        client=client[0],
        client_key=client[1],
        encrypted_key=encrypted,
    )


@pytest.fixture(scope="session", name="tls_certs")
def tls_certs_fixture(tmp_path_factory) -> Certs:
    """The test PKI of :func:`make_certs`, made once per test session."""
    return make_certs(str(tmp_path_factory.mktemp("tls-certs")))
