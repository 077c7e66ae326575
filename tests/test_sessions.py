"""Sessions end: a token is refused on every API process once its user is removed, its password
or role changed or its tenant deactivated; tokens expire; the console stream checks its caller
again; failed logins are throttled per user and per address with a 429."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator

import httpx
import pytest

from infra.api.app import create_app
from infra.api.server import ApiServer
from infra.broker import free_port
from infra.log.kafka import ensure_topics
from infra.observe.follower import stop_together
from infra.settings import Settings
from tests.conftest import RunningNode, wait_until

pytestmark = pytest.mark.integration
ADMIN_PASSWORD = "sessions-admin-pw"


@pytest.fixture(scope="module")
def apis(broker) -> Iterator[tuple[Settings, list[str]]]:
    """A node, one API in this process and a second `stratos api` process, on one log."""
    settings = Settings(
        kafka_bootstrap=broker.bootstrap,
        topic_prefix=f"t{uuid.uuid4().hex[:8]}.",
        partitions=4,
        admin_password=ADMIN_PASSWORD,
        password_hash_rounds=4,
    )
    ensure_topics(settings)
    node = RunningNode(settings)
    first = ApiServer(create_app(settings), port=free_port()).start()
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": os.getcwd(),
        "STRATOS_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "STRATOS_TOPIC_PREFIX": settings.topic_prefix,
        "STRATOS_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "STRATOS_PASSWORD_HASH_ROUNDS": "4",
    }
    second = subprocess.Popen(
        [sys.executable, "-m", "infra.cli", "api", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        try:
            return httpx.get(f"{url}/api/whoami", auth=("admin", ADMIN_PASSWORD), timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(answers, timeout=90, interval=0.3, message="the second API process")
        yield settings, [first.url, url]
    finally:
        second.terminate()
        second.wait(20)
        stop_together(first.stop, node.stop)


def admin(url: str, user: str = "admin", password: str = ADMIN_PASSWORD) -> httpx.Client:
    return httpx.Client(base_url=f"{url}/api", auth=(user, password), timeout=60)


def new_tenant(url: str) -> str:
    domain = f"t{uuid.uuid4().hex[:8]}.org"
    with admin(url) as client:
        reply = client.post(
            "/tenants",
            json={"tenantDomain": domain, "admin": "boss", "adminPassword": "boss-pw", "email": f"boss@{domain}"},
        )
    assert reply.status_code == 201, reply.text
    return domain


def token_for(url: str, username: str, password: str) -> str:
    issued = httpx.post(f"{url}/api/token", json={"username": username, "password": password}, timeout=60)
    assert issued.status_code == 200, issued.text
    return issued.json()["access_token"]


def whoami(url: str, token: str) -> httpx.Response:
    return httpx.get(f"{url}/api/whoami", headers={"Authorization": f"Bearer {token}"}, timeout=60)


def refused_everywhere(urls: list[str], token: str) -> list[str] | None:
    answers = [whoami(url, token) for url in urls]
    return [a.json()["message"] for a in answers] if all(a.status_code == 401 for a in answers) else None


def change(url: str, domain: str, case: str) -> None:
    """What ends carol's sessions, done through the first API."""
    user = {"userName": "carol", "credential": "carol-pw", "role": "admin", "email": "carol@example.org"}
    with admin(url, f"boss@{domain}", "boss-pw") as boss:
        if case == "removal":
            reply = boss.delete("/users/carol")
        elif case == "password":
            reply = boss.put("/users", json={**user, "credential": "new-pw"})
        elif case == "role":
            reply = boss.put("/users", json={**user, "role": "user"})
    if case == "deactivation":
        with admin(url) as root:
            reply = root.put("/tenants", json={"tenantDomain": domain, "admin": "boss", "active": False})
    assert reply.status_code == 200, reply.text


@pytest.mark.parametrize(
    "case, reason",
    [
        ("removal", "was removed or its tenant deactivated"),
        ("password", "password of 'carol@{domain}' changed"),
        ("role", "role of 'carol@{domain}' changed"),
        ("deactivation", "was removed or its tenant deactivated"),
    ],
)
def test_a_token_is_revoked_on_every_api_process(apis, case, reason):
    _, urls = apis
    domain = new_tenant(urls[0])
    with admin(urls[0], f"boss@{domain}", "boss-pw") as boss:
        assert (
            boss.post(
                "/users",
                json={"userName": "carol", "credential": "carol-pw", "role": "admin", "email": "carol@example.org"},
            ).status_code
            == 201
        )
    token = token_for(urls[1], f"carol@{domain}", "carol-pw")  # issued by the second process
    for url in urls:  # and good on both
        good = wait_until(lambda url=url: (r := whoami(url, token)).status_code == 200 and r, timeout=30)
        assert good.json()["username"] == f"carol@{domain}"
    change(urls[0], domain, case)
    messages = wait_until(
        lambda: refused_everywhere(urls, token),
        timeout=30,
        interval=0.05,
        message=f"the token refused on both API processes after the {case}",
    )
    assert all("the bearer token was revoked" in m and reason.format(domain=domain) in m for m in messages), messages
    if case == "password":
        assert whoami(urls[1], token_for(urls[0], f"carol@{domain}", "new-pw")).status_code == 200


def test_tokens_expire_on_every_api_process(apis):
    settings, urls = apis
    short = ApiServer(create_app(settings.model_copy(update={"token_ttl_seconds": 1.0})), port=free_port()).start()
    try:
        issued = httpx.post(
            f"{short.url}/api/token", json={"username": "admin", "password": ADMIN_PASSWORD}, timeout=60
        )
        assert issued.json()["expires_in"] == 1.0
        token = issued.json()["access_token"]
        assert whoami(urls[1], token).status_code == 200  # any process takes it while it lasts
        messages = wait_until(
            lambda: refused_everywhere([short.url, *urls], token), timeout=30, message="the token expired"
        )
        assert all("has expired" in m for m in messages)
    finally:
        short.stop()


def test_the_console_stream_ends_when_its_callers_token_is_revoked(apis):
    _, urls = apis
    domain = new_tenant(urls[0])
    token = token_for(urls[0], f"boss@{domain}", "boss-pw")
    seen = []
    with httpx.stream(
        "GET", f"{urls[0]}/api/console/stream", headers={"Authorization": f"Bearer {token}"}, timeout=60
    ) as stream:
        assert stream.status_code == 200
        for line in stream.iter_lines():
            seen.append(line)
            if line == "event: state" and len([s for s in seen if s == "event: state"]) == 1:
                change(urls[0], domain, "deactivation")
            if line.startswith("data:") and seen[-2:-1] == ["event: refused"]:
                break
    assert "the bearer token was revoked" in seen[-1] and f"boss@{domain}" in seen[-1]


def test_failed_logins_are_throttled_per_user_and_address_with_a_429(apis):
    settings, _ = apis
    strict = settings.model_copy(update={"login_failures": 3, "login_lockout_seconds": 3.0})
    server = ApiServer(create_app(strict), port=free_port()).start()
    try:

        def login(password: str, user: str = "admin") -> httpx.Response:
            return httpx.post(f"{server.url}/api/token", json={"username": user, "password": password}, timeout=60)

        assert [login("wrong").status_code for _ in range(3)] == [401, 401, 401]
        throttled = login(ADMIN_PASSWORD)  # even the right password waits now
        assert throttled.status_code == 429 and "too many failed logins for 'admin'" in throttled.json()["message"]
        assert 1 <= int(throttled.headers["Retry-After"]) <= 4
        basic = httpx.get(f"{server.url}/api/whoami", auth=("someone-else", "x"), timeout=60)
        assert basic.status_code == 429  # the same address, another user name
        # the same user from another address is not locked out by failures it did not make
        elsewhere = httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.2"), timeout=60)
        with elsewhere:
            assert (
                elsewhere.post(
                    f"{server.url}/api/token", json={"username": "admin", "password": ADMIN_PASSWORD}
                ).status_code
                == 200
            )
        wait_until(
            lambda: login(ADMIN_PASSWORD).status_code == 200,
            timeout=30,
            interval=0.5,
            message="logins accepted again after the window",
        )
    finally:
        server.stop()


def test_a_login_this_process_cannot_check_answers_503_naming_the_key(apis):
    """An API given another STRATOS_SECRET_KEY than the one that sealed a tenant's password
    (a rotation that dropped the old key) says so with 503, not a 500."""
    from cryptography.fernet import Fernet
    from pydantic import SecretStr

    settings, urls = apis
    domain = new_tenant(urls[0])
    stranger = settings.model_copy(
        update={"secret_key": SecretStr(Fernet.generate_key().decode()), "login_failures": 10_000}
    )
    server = ApiServer(create_app(stranger), port=free_port()).start()
    try:
        answer = wait_until(
            lambda: (
                (
                    reply := httpx.post(
                        f"{server.url}/api/token",
                        json={"username": f"boss@{domain}", "password": "boss-pw"},
                        timeout=60,
                    )
                ).status_code
                != 401
                and reply
            ),
            timeout=30,
            message="the tenant read by the new API process",
        )
        assert answer.status_code == 503, answer.text
        assert "cannot check passwords" in answer.json()["message"]
        assert "keep old keys after a rotation" in answer.json()["message"]
    finally:
        server.stop()
