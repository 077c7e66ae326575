"""The credentials of a secure embedded broker (`stratos broker --secure`, `stratos up --secure`).

Made once into `<state dir>/kafka-tls/` beside the broker's certificate (`infra.auth.tls`): one
owner-only `<principal>.password` file each for the nodes' own principal (`broker`) and the
platform's (`stratos`, a super user: the platform's parts). Other principals (instances,
clients) get theirs from `stratos kafka-acls --apply` (`infra.broker.acls`).
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from infra.auth.tls import kafka_broker_certificate, kafka_tls_dir
from infra.broker import BROKER_PRINCIPAL, BrokerSecurity
from infra.settings import Settings

PLATFORM_PRINCIPAL = "stratos"
"""The principal of the platform's own parts: a super user of the broker."""
SECURE_FIELDS = {"kafka_security_protocol", "kafka_sasl_mechanism", "kafka_username", "kafka_password", "kafka_ca"}
"""The settings `as_platform_principal` sets."""


def password(settings: Settings, principal: str) -> str:
    """The principal's password in `<state dir>/kafka-tls/<principal>.password`, made on first
    use (owner-only; two starts racing agree on the first one's)."""
    path = kafka_tls_dir(settings) / f"{principal}.password"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        partial = path.with_name(f".{path.name}.{os.getpid()}")
        descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as out:
            out.write(secrets.token_urlsafe(24) + "\n")
        try:
            os.link(partial, path)
        except FileExistsError:
            pass
        finally:
            partial.unlink()
    if path.stat().st_mode & 0o077:
        raise PermissionError(f"{path} is readable by others: chmod 600 it")
    return path.read_text().strip()


def broker_security(settings: Settings) -> BrokerSecurity:
    cert, key = kafka_broker_certificate(settings)
    return BrokerSecurity(
        cert=cert,
        key=key,
        broker_password=password(settings, BROKER_PRINCIPAL),
        users={PLATFORM_PRINCIPAL: password(settings, PLATFORM_PRINCIPAL)},
        super_users=(PLATFORM_PRINCIPAL,),
    )


def platform_client_env(settings: Settings) -> dict[str, str]:
    """The `STRATOS_KAFKA_*` variables of the platform's parts on the secure broker."""
    return {
        "STRATOS_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "STRATOS_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "STRATOS_KAFKA_USERNAME": PLATFORM_PRINCIPAL,
        "STRATOS_KAFKA_PASSWORD": password(settings, PLATFORM_PRINCIPAL),
        "STRATOS_KAFKA_CA": str(Path(kafka_tls_dir(settings) / "ca.pem").absolute()),
    }


def as_platform_principal(settings: Settings) -> Settings:
    """`settings` as the platform's parts see them on the secure broker."""
    from pydantic import SecretStr

    env = platform_client_env(settings)
    return settings.model_copy(
        update={
            "kafka_security_protocol": "SASL_SSL",
            "kafka_sasl_mechanism": "SCRAM-SHA-512",
            "kafka_username": PLATFORM_PRINCIPAL,
            "kafka_password": SecretStr(env["STRATOS_KAFKA_PASSWORD"]),
            "kafka_ca": Path(env["STRATOS_KAFKA_CA"]),
        }
    )
