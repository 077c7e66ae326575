"""The mock IaaS account: where it answers and its access key (shared by the mock IaaS part,
the cloud controller's driver and the platform API's view of it)."""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path

from infra.auth.tls import trusted_ca
from infra.cloud.iaas.mock_driver import MockEndpoint
from infra.settings import Settings


def cloud_dir(settings: Settings) -> Path:
    return settings.state_dir / "mock-iaas"


def access_key(settings: Settings) -> str:
    """The cloud's access key: the setting, else the state directory's key file (created once,
    owner-only; a concurrent first start reads the one that won)."""
    if settings.mock_iaas_key is not None:
        return settings.mock_iaas_key.get_secret_value()
    path = cloud_dir(settings) / "access-key"
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        for _ in range(50):  # the creator may not have written it yet
            if key := path.read_text().strip():
                return key
            time.sleep(0.02)
        raise RuntimeError(f"{path} is empty: delete it and start again") from None
    key = secrets.token_urlsafe(32)
    with os.fdopen(fd, "w") as file:
        file.write(key)
    return key


def mock_port(settings: Settings) -> int:
    return settings.mock_api_port or settings.api_port + 1


def mock_endpoint(settings: Settings) -> MockEndpoint:
    """Where the cloud controller and the platform API reach the mock IaaS."""
    url = settings.mock_iaas_url or f"{'https' if settings.api_tls else 'http'}://127.0.0.1:{mock_port(settings)}"
    ca = trusted_ca(settings) if url.startswith("https:") else None
    return MockEndpoint(url=url.rstrip("/"), key=access_key(settings), ca_cert=str(ca) if ca else None)
