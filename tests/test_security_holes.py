"""The holes of issue 26, each closed on the real broker with a real node and API: the node
checks the super admin's tokens without its password; `stratos deadletter replay` re-sends a
record as its sender sent it (refused again) unless the operator signs it; archives keep no
bearer token; `/api/replay` is for a tenant's admins and leaves the garbage collector alone."""

from __future__ import annotations

import gc
import json
import threading
import uuid

import httpx
import pytest
from kafka import KafkaProducer
from pydantic import SecretStr

from infra.api.app import create_app
from infra.api.server import ApiServer
from infra.auth.signing import TOKEN
from infra.broker import free_port
from infra.log.archive import export_log
from infra.log.archive_format import ArchiveReader
from infra.log.commands_client import CommandClient
from infra.log.kafka import ORIGINAL_HEADERS, ensure_topics, envelope, new_id, read_to_end
from infra.observe.follower import stop_together
from infra.settings import Settings
from schemas import commands as C
from schemas.ids import aggregate_id
from schemas.records import CommandRecord
from schemas.status import CommandAccepted, CommandRejected
from tests.conftest import RunningNode, wait_until
from tests.test_example_clients import stratos
from tests.test_signed_records import add_user, put, token

pytestmark = pytest.mark.integration
ADMIN_PASSWORD = "holes-admin-pw"
CLUSTER_KEY = aggregate_id("carbon.super", "cluster", "single-cartridge-app.php1.php.domain")


@pytest.fixture(scope="module")
def platform(broker):
    """A node started as `stratos up` starts it (no STRATOS_ADMIN_PASSWORD: that is the API's
    alone) and an API with a real admin password."""
    api_settings = Settings(
        kafka_bootstrap=broker.bootstrap,
        topic_prefix=f"t{uuid.uuid4().hex[:8]}.",
        partitions=4,
        admin_password=SecretStr(ADMIN_PASSWORD),
        password_hash_rounds=4,
    )
    ensure_topics(api_settings)
    node = RunningNode(api_settings.model_copy(update={"admin_password": None}))
    server = ApiServer(create_app(api_settings), port=free_port()).start()
    raw = KafkaProducer(bootstrap_servers=api_settings.kafka_bootstrap)
    client = CommandClient(api_settings)
    try:
        yield api_settings, server.url, raw, client
    finally:
        client.close()
        raw.close()
        stop_together(server.stop, node.stop)


def refused_letter(settings, record_id: str, count: int = 1) -> list[dict]:
    """The dead letters of one command, as `stratos deadletter list --json` prints them."""

    def found():
        listed = stratos(settings, "deadletter", "list", "--json", "--topic", "commands")
        letters = [letter for letter in json.loads(listed.stdout) if json.loads(letter["original"])["id"] == record_id]
        return len(letters) >= count and letters

    return wait_until(found, timeout=60, message=f"{count} dead letters of {record_id}")


def test_the_super_admins_token_works_over_kafka_on_a_node_without_the_password(platform):
    settings, url, raw, client = platform
    command = add_user("victor", "victor-pw")
    put(raw, settings, "commands", command, [(TOKEN, token(url, "admin", ADMIN_PASSWORD).encode())])
    reply = client.wait(command.id, timeout=30)
    assert isinstance(reply, CommandAccepted), reply


def test_a_replayed_dead_letter_keeps_its_senders_token_unless_the_operator_signs(platform):
    settings, url, raw, client = platform
    with httpx.Client(base_url=f"{url}/api", auth=("admin", ADMIN_PASSWORD), timeout=30) as admin:
        added = admin.post("/users", json={"userName": "rita", "credential": "rita-pw", "role": "user"})
        assert added.status_code == 201, added.text
    rita = token(url, "rita", "rita-pw")
    command = add_user("mallet", "pw")  # a read-only user may not add users: 403
    put(raw, settings, "commands", command, [(TOKEN, rita.encode())])
    first = client.wait(command.id, timeout=30)
    assert isinstance(first, CommandRejected) and first.code == 403
    letter = refused_letter(settings, command.id)[0]
    assert letter["headers"][ORIGINAL_HEADERS + TOKEN] == "********"  # listings never print a token

    replayed = stratos(settings, "deadletter", "replay", letter["id"])
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    assert "unsigned, with its sender's headers (stratos-token)" in " ".join(replayed.stdout.split())
    again = refused_letter(settings, command.id, count=2)  # the user's token checked again: 403 again
    assert all(item["reason"].startswith("refused (403)") for item in again), again
    assert not [d for d in read_to_end(settings, "events") if d.record.aggregate_id.endswith("/user/mallet")]

    signed = stratos(settings, "deadletter", "replay", letter["id"], "--sign", "--json")
    assert signed.returncode == 0, signed.stdout + signed.stderr
    assert json.loads(signed.stdout)["signed_by_platform"] is True
    wait_until(
        lambda: [d for d in read_to_end(settings, "events") if d.record.aggregate_id.endswith("/user/mallet")],
        timeout=30,
        message="the command the operator signed taking effect",
    )


def test_an_unsigned_forgery_replayed_is_refused_again(platform):
    settings, _, raw, client = platform
    forged = add_user("mallory", "pw")
    put(raw, settings, "commands", forged)
    assert client.wait(forged.id, timeout=30).code == 401
    letter = refused_letter(settings, forged.id)[0]
    replayed = stratos(settings, "deadletter", "replay", letter["id"], "--json")
    assert replayed.returncode == 0 and json.loads(replayed.stdout)["signed_by_platform"] is False
    again = refused_letter(settings, forged.id, count=2)
    assert all(item["reason"].startswith("refused (401)") for item in again), again


def test_an_archive_keeps_no_bearer_token(platform, tmp_path):
    settings, url, raw, client = platform
    secret = token(url, "admin", ADMIN_PASSWORD)
    # a fact only the platform reports: refused (403) even with a good token, dead-lettered with it
    command = envelope(CommandRecord, C.ReportNodeDestroyed(member_id="m1"), CLUSTER_KEY, record_id=new_id())
    put(raw, settings, "commands", command, [(TOKEN, secret.encode())])
    assert isinstance(client.wait(command.id, timeout=30), CommandRejected)
    refused_letter(settings, command.id)
    archive = tmp_path / "log.archive"
    exported = export_log(settings, archive, ("commands", "deadletter"))
    assert exported.records["commands"] >= 1 and exported.records["deadletter"] >= 1
    names = set()
    for block in ArchiveReader(archive):
        for _offset, _ts, _key, value, headers in block.rows:
            names |= {name for name, _ in headers}
            assert all(secret.encode() not in (header or b"") for _, header in headers)
            assert secret.encode() not in value
    assert TOKEN not in names and ORIGINAL_HEADERS + TOKEN not in names
    assert "ce_id" in names  # the other headers stay


def test_replay_over_rest_is_for_tenant_admins_and_leaves_the_collector_alone(platform):
    settings, url, *_ = platform
    with httpx.Client(base_url=f"{url}/api", auth=("admin", ADMIN_PASSWORD), timeout=30) as admin:
        added = admin.post("/users", json={"userName": "rex", "credential": "rex-pw", "role": "user"})
        assert added.status_code == 201, added.text
    wait_until(
        lambda: httpx.get(f"{url}/api/whoami", auth=("rex", "rex-pw"), timeout=30).status_code == 200,
        message="the reader logging in",
    )
    at = {"at": "2099-01-01T00:00:00Z"}
    reader = httpx.get(f"{url}/api/replay", params=at, auth=("rex", "rex-pw"), timeout=30)
    assert reader.status_code == 403 and "may read but not change" in reader.json()["message"]

    switched_off = threading.Event()
    done = threading.Event()

    def watch() -> None:  # the API runs in this process: its collector is ours
        while not done.is_set():
            if not gc.isenabled():
                switched_off.set()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        for _ in range(3):
            answer = httpx.get(f"{url}/api/replay", params=at, auth=("admin", ADMIN_PASSWORD), timeout=60)
            assert answer.status_code == 200, answer.text
    finally:
        done.set()
        watcher.join(5)
    assert gc.isenabled() and not switched_off.is_set()
