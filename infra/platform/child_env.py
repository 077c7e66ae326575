"""The environment of a child process: only what it needs, never the platform's secrets by default.

Every process the platform starts (supervised parts, process-mode instances, git, clean hooks, a
load-balancer cartridge's `stratos lb`) is given an environment built here instead of a copy of
its parent's: the basics a program needs to run (PATH, HOME, locale, Python's path) plus what
the caller names. A secret reaches a part only if the part is listed for it in `PART_SECRETS`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

BASICS = (
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "LANG",
    "LANGUAGE",
    "TZ",
    "TMPDIR",
    "PYTHONPATH",
    "VIRTUAL_ENV",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
)
BASIC_PREFIXES = ("LC_",)

PART_SECRETS: dict[str, frozenset[str]] = {
    "STRATOS_ADMIN_PASSWORD": frozenset({"api"}),
    "STRATOS_SECRET_KEY": frozenset({"api", "node", "reactor", "cloud"}),
    "STRATOS_PLATFORM_SECRET": frozenset(
        {"api", "node", "reactor", "cloud", "health", "topology", "lb", "usage-export", "mock-iaas", "tenant-replies"}
    ),  # every part signs (infra/auth/signing.py)
    "STRATOS_PLATFORM_SECRET_PREVIOUS": frozenset(
        {"api", "node", "reactor", "cloud", "health", "topology", "lb", "usage-export", "mock-iaas"}
    ),  # and verifies history signed before a rotation
    "STRATOS_MOCK_IAAS_KEY": frozenset({"mock-iaas", "cloud", "api"}),
    "STRATOS_KAFKA_PASSWORD": frozenset(
        {"api", "node", "reactor", "cloud", "health", "topology", "lb", "usage-export", "mock-iaas", "tenant-replies"}
    ),  # every part talks to Kafka; instances never get the platform's principal
}
"""Secret settings, and the supervised parts that use them (the rest never see them)."""


def minimal_env(
    extra: Mapping[str, str] | None = None, keep: Iterable[str] = (), source: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The basics from `source` (default: this process's environment), the variables named in
    `keep` if set there, and `extra`."""
    source = os.environ if source is None else source
    names = set(BASICS) | set(keep)
    env = {k: v for k, v in source.items() if k in names or k.startswith(BASIC_PREFIXES)}
    env.update(extra or {})
    return env


def platform_settings(source: Mapping[str, str] | None = None) -> dict[str, str]:
    """The STRATOS_* settings of `source` without the secret ones."""
    source = os.environ if source is None else source
    return {k: v for k, v in source.items() if k.startswith("STRATOS_") and k not in PART_SECRETS}


def part_env(part: str, env: Mapping[str, str]) -> dict[str, str]:
    """A supervised part's environment: `env` without the secrets this part does not use."""
    return {k: v for k, v in env.items() if k not in PART_SECRETS or part in PART_SECRETS[k]}
