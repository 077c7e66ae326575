"""HTTPS for the API, console, mock IaaS and metadata service (`stratos up --tls`, STRATOS_API_TLS=1).

The certificate is the one given by path (STRATOS_API_TLS_CERT and STRATOS_API_TLS_KEY), else
a self-signed one made on first start into `<state dir>/tls/` with `cryptography`: an EC P-256
key (owner-only file), valid ten years for localhost, 127.0.0.1, ::1 and this host's name.
Clients trust STRATOS_API_CA when set, else that generated certificate when it exists, else
the system's CAs (`trusted_ca`, `verify_for`).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import socket
import ssl
from pathlib import Path

from infra.settings import Settings


class TlsConfigError(ValueError):
    """The TLS settings cannot work (the message names the setting)."""


def tls_dir(settings: Settings) -> Path:
    return settings.state_dir / "tls"


def server_certificate(settings: Settings) -> tuple[Path, Path]:
    """(certificate, key) files to serve HTTPS with; generated once when none is given."""
    if settings.api_tls_cert or settings.api_tls_key:
        if not (settings.api_tls_cert and settings.api_tls_key):
            raise TlsConfigError("STRATOS_API_TLS_CERT and STRATOS_API_TLS_KEY go together: set both")
        for name, path in (
            ("STRATOS_API_TLS_CERT", settings.api_tls_cert),
            ("STRATOS_API_TLS_KEY", settings.api_tls_key),
        ):
            if not path.is_file():
                raise TlsConfigError(f"{name}: no file at {path}")
        return settings.api_tls_cert, settings.api_tls_key
    cert, key = tls_dir(settings) / "cert.pem", tls_dir(settings) / "key.pem"
    if not (cert.is_file() and key.is_file()):
        generate_self_signed(cert, key)
    return cert, key


def generate_self_signed(cert_path: Path, key_path: Path, hostnames: list[str] | None = None) -> None:
    """Write a self-signed certificate and its key (0600); each file appears whole or not at all."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    names = hostnames or sorted({"localhost", socket.gethostname()})
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, "Stratos-ES"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Stratos-ES (self-signed)"),
        ]
    )
    now = datetime.datetime.now(datetime.UTC)
    alt = [x509.DNSName(n) for n in names] + [x509.IPAddress(ipaddress.ip_address(a)) for a in ("127.0.0.1", "::1")]
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(cert_path.parent, 0o700)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    _write(key_path, key_pem, 0o600)
    _write(cert_path, certificate.public_bytes(serialization.Encoding.PEM), 0o644)


def _write(path: Path, data: bytes, mode: int) -> None:
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    os.replace(partial, path)


def tls_options(settings: Settings) -> dict[str, str]:
    """uvicorn's keyword arguments for HTTPS when STRATOS_API_TLS is set, else none."""
    if not settings.api_tls:
        return {}
    cert, key = server_certificate(settings)
    return {"ssl_certfile": str(cert), "ssl_keyfile": str(key)}


def trusted_ca(settings: Settings) -> Path | None:
    """The certificate a client of this platform trusts: STRATOS_API_CA, else the given or
    generated server certificate if there is one."""
    if settings.api_ca:
        return settings.api_ca
    if settings.api_tls_cert and settings.api_tls_cert.is_file():
        return settings.api_tls_cert
    generated = tls_dir(settings) / "cert.pem"
    return generated if generated.is_file() else None


def verify_for(url: str, settings: Settings) -> ssl.SSLContext | bool:
    """httpx's `verify` for a URL of this platform: a context trusting its certificate for
    https (the system's CAs when there is none), else True."""
    if url.startswith("https:") and (ca := trusted_ca(settings)) is not None:
        return ssl.create_default_context(cafile=str(ca))
    return True


def scheme(settings: Settings) -> str:
    return "https" if settings.api_tls else "http"


# --- Kafka over TLS (`stratos broker --secure`) -------------------------------------------------
def kafka_tls_dir(settings: Settings) -> Path:
    return settings.state_dir / "kafka-tls"


def kafka_ca(settings: Settings) -> Path | None:
    """What the platform's Kafka clients trust: STRATOS_KAFKA_CA, else the certificate
    `stratos broker --secure` made in the state dir, else None (the system's CAs)."""
    if settings.kafka_ca:
        return settings.kafka_ca
    made = kafka_tls_dir(settings) / "ca.pem"
    return made if made.is_file() else None


def kafka_broker_certificate(settings: Settings) -> tuple[Path, Path]:
    """(certificate, key) of the embedded broker's TLS listener, made once into
    `<state dir>/kafka-tls/` (self-signed for localhost and 127.0.0.1: the clients trust it as
    `ca.pem`); the key file is owner-only."""
    directory = kafka_tls_dir(settings)
    cert, key = directory / "ca.pem", directory / "broker-key.pem"
    if not (cert.is_file() and key.is_file()):
        generate_self_signed(cert, key, ["localhost"])
    return cert, key
