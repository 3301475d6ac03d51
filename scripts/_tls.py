"""Throwaway TLS material for the secure test services (``--kafka-sasl-ssl``, ``--redis-tls``).

:func:`material` returns a test certificate authority, a server certificate it signed for
``127.0.0.1`` and ``localhost`` (PEM, EC P-256 keys: fast to make, accepted by the JVM, OpenSSL
and librdkafka alike), the same key and chain in a password-protected PKCS#12 keystore for the
Kafka broker, and a second, unrelated CA that a client can be given to prove that an untrusted
server certificate is refused.

Made with Python's ``cryptography`` (a dev dependency of the workspace; imported only here, so
the plain ``--redis``/``--kafka`` services keep needing nothing but the standard library).
The files are cached in ``$TMPDIR/qmtl-test-tls-<uid>`` (``QMTL_TEST_TLS_DIR`` overrides) and
reused while the certificates stay valid for at least another day; a lock file keeps parallel
test sessions from writing them at once. Nothing here is secret: the keystore password is a
fixed test value.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import _provision  # a sibling module: same folder, on sys.path above

__all__ = ["KEYSTORE_PASSWORD", "Material", "TlsError", "material"]

#: Password of the broker's PKCS#12 keystore (test material only).
KEYSTORE_PASSWORD = "qmtl-test-keystore"
_VALID_DAYS = 30
_RENEW_BEFORE = datetime.timedelta(days=1)
_FILES = (
    "ca.pem",
    "server.pem",
    "server.key",
    "server-chain.pem",
    "server.p12",
    "untrusted-ca.pem",
)


class TlsError(RuntimeError):
    """The TLS material could not be made; the message says why and what to install."""


@dataclass(frozen=True)
class Material:
    """Paths of the generated files (all PEM but the keystore)."""

    directory: Path

    @property
    def ca(self) -> Path:
        """The test CA's certificate: what clients trust."""
        return self.directory / "ca.pem"

    @property
    def server_cert(self) -> Path:
        return self.directory / "server.pem"

    @property
    def server_key(self) -> Path:
        """The server's private key (unencrypted PKCS#8)."""
        return self.directory / "server.key"

    @property
    def server_chain(self) -> Path:
        """The server certificate followed by the CA's."""
        return self.directory / "server-chain.pem"

    @property
    def keystore(self) -> Path:
        """PKCS#12 keystore (key and chain) protected by :data:`KEYSTORE_PASSWORD`."""
        return self.directory / "server.p12"

    @property
    def untrusted_ca(self) -> Path:
        """A CA that signed nothing the services use."""
        return self.directory / "untrusted-ca.pem"


def default_directory() -> Path:
    configured = os.environ.get("QMTL_TEST_TLS_DIR")
    if configured:
        return Path(configured)
    return Path(tempfile.gettempdir()) / f"qmtl-test-tls-{os.getuid()}"


def material(directory: Path | None = None) -> Material:
    """The cached material in ``directory`` (made on first use, renewed before it expires)."""
    made = Material(Path(directory) if directory is not None else default_directory())
    made.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    with _provision.locked(made.directory / ".lock"):
        if not _still_valid(made):
            _generate(made)
    return made


def _crypto() -> Any:
    try:
        from cryptography import x509
    except ImportError as error:
        raise TlsError(
            "the secure test services need the 'cryptography' package to make their test "
            "certificates: run `uv sync --all-packages --locked` (it is in the dev group) or "
            "`pip install cryptography`"
        ) from error
    return x509


def _still_valid(made: Material) -> bool:
    if not all((made.directory / name).is_file() for name in _FILES):
        return False
    x509 = _crypto()
    try:
        cert = x509.load_pem_x509_certificate(made.server_cert.read_bytes())
    except ValueError:
        return False
    now = datetime.datetime.now(datetime.UTC)
    return bool(cert.not_valid_after_utc - now > _RENEW_BEFORE)


def _generate(made: Material) -> None:
    x509 = _crypto()
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import pkcs12
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)
    until = now + datetime.timedelta(days=_VALID_DAYS)

    def name(common: str) -> Any:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])

    def authority(common: str) -> tuple[Any, Any]:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(name(common))
            .issuer_name(name(common))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(until)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, hashes.SHA256())
        )
        return key, cert

    ca_key, ca_cert = authority("qmtl test CA")
    _, untrusted = authority("qmtl untrusted test CA")
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(name("127.0.0.1"))
        .issuer_name(ca_cert.subject)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(until)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    key_pem = server_key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    keystore = pkcs12.serialize_key_and_certificates(
        b"kafka",
        server_key,
        server_cert,
        [ca_cert],
        serialization.BestAvailableEncryption(KEYSTORE_PASSWORD.encode()),
    )
    files = {
        "ca.pem": ca_cert.public_bytes(pem),
        "untrusted-ca.pem": untrusted.public_bytes(pem),
        "server.key": key_pem,
        "server-chain.pem": server_cert.public_bytes(pem) + ca_cert.public_bytes(pem),
        "server.p12": keystore,
        # last: _still_valid reads it, so a half-written set is never taken for a whole one
        "server.pem": server_cert.public_bytes(pem),
    }
    for file_name, data in files.items():
        path = made.directory / file_name
        partial = path.with_name(path.name + ".partial")
        partial.write_bytes(data)
        partial.chmod(0o600)
        partial.replace(path)
