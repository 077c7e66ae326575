"""Events records as the platform writes them (signed), for pure tests of the shared reader."""

from __future__ import annotations

from dataclasses import dataclass, field

from actors.history import Fence
from infra.auth.signing import PLATFORM, Signer, Verifier, key_id
from infra.log.eventlog import History

SECRET = b"a-test-platform-secret-of-32-bytes!"
PLATFORM_SIGNER = Signer(PLATFORM, SECRET, key_id(SECRET))


@dataclass(frozen=True)
class Raw:
    """What a consumer gives a reader: one record and where it was."""

    partition: int
    offset: int
    value: bytes | None
    key: bytes | None = b"tenant/cluster/c1"
    headers: list = field(default_factory=list)
    topic: str = "stratos.events"


def signed(partition: int, offset: int, value: bytes | None, key: bytes | None = b"tenant/cluster/c1") -> Raw:
    return Raw(partition, offset, value, key, PLATFORM_SIGNER.headers("events", key, value))


def history(fence_at=lambda _p, _o: Fence()) -> History:
    """A reader's history under the test secret (rejections are only logged)."""
    return History(Verifier(SECRET), fence_at)
