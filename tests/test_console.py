"""The web console in real headless Chromium (Debian's), served by the API over the real broker
and a running node: login, the runtime tree with Active members, live updates without reload,
the member/load chart and recent events. Screenshots go to test-artifacts/."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import expect
from pydantic import SecretStr

from infra.api.app import create_app
from infra.api.server import ApiServer
from infra.broker import free_port
from infra.log.kafka import Appender, envelope
from schemas import commands as C
from schemas.envelope import SUPER_TENANT
from schemas.ids import aggregate_id
from schemas.records import HealthRecord
from schemas.status import CommandAccepted, HealthStat
from tests.conftest import wait_until
from tests.test_api_platform import define_samples

pytestmark = pytest.mark.integration
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
PASSWORD = "console-pw"
APP = "single-cartridge-app"
CLUSTER = "single-cartridge-app.php1.php.domain"
CLUSTER_KEY = aggregate_id(SUPER_TENANT, "cluster", CLUSTER)
BROWSER_WAIT_MS = 30_000


@pytest.fixture
def api(settings, running_node, tmp_path) -> Iterator[str]:
    """The API (and so the console) on a free port, over the test's topics and a running node."""
    own = settings.model_copy(
        update={"admin_password": SecretStr(PASSWORD), "password_hash_rounds": 4, "state_dir": tmp_path}
    )
    server = ApiServer(create_app(own), port=free_port()).start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="module")
def chromium():
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is missing: `make install` installs Debian's chromium")
    from playwright.sync_api import sync_playwright

    expect.set_options(timeout=BROWSER_WAIT_MS)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(chromium):
    context = chromium.new_context(viewport={"width": 1400, "height": 1000})
    made = context.new_page()
    made.set_default_timeout(BROWSER_WAIT_MS)
    yield made
    context.close()


def rest(url: str, username: str = "admin", password: str = PASSWORD) -> httpx.Client:
    return httpx.Client(base_url=f"{url}/api", auth=(username, password), timeout=60)


def log_in(page, url: str, username: str = "admin", password: str = PASSWORD) -> None:
    page.goto(f"{url}/")
    page.fill("#username", username)
    page.fill("#password", password)
    page.click("#login button[type=submit]")


def deploy_sample(url: str) -> str:
    """Define the Stratos samples, deploy the single-cartridge application, return its member."""
    with rest(url) as client:
        define_samples(client)
        reply = client.post(f"/applications/{APP}/deploy/application-policy-1")
        assert reply.status_code == 202, reply.text

        def first_member():
            members = client.get(f"/cluster/{CLUSTER}")
            return members.status_code == 200 and members.json()["member"]

        return wait_until(first_member, message="the cluster's first member")[0]["memberId"]


def activate(client, member: str, private_ip: str) -> None:
    """What the cloud controller and the cartridge agent report for a member that came up."""
    for command in (
        C.ReportNodeCreated(member_id=member, node_id=f"node-{member}", private_ip=private_ip, public_ip="192.0.2.10"),
        C.ReportInstanceStatus(member_id=member, status="Started"),
        C.ReportInstanceStatus(member_id=member, status="Activated"),
    ):
        assert isinstance(client.call(CLUSTER_KEY, command), CommandAccepted)


def publish_load(settings, member: str, load: float) -> None:
    """Health samples as the cartridge agent publishes them."""
    appender = Appender(settings)
    try:
        for metric, value in (("load_average", load), ("memory_consumption", 40.0)):
            stat = HealthStat(
                cluster_id=CLUSTER,
                member_id=member,
                network_partition_id="network-partition-1",
                metric=metric,
                value=value,
                timestamp=time.time(),
            )
            appender.append("health", CLUSTER_KEY, envelope(HealthRecord, stat, CLUSTER_KEY, tenant=SUPER_TENANT))
    finally:
        appender.close()


def member_row(page, member: str, status: str):
    return page.locator(f'tr[data-member="{member}"][data-status="{status}"]')


def test_console_shows_active_members_and_follows_a_new_member_live(settings, api, client, page):
    member = deploy_sample(api)
    one_member_since = time.time()
    activate(client, member, "10.0.0.7")
    publish_load(settings, member, 0.8)

    log_in(page, api)
    row = member_row(page, member, "Active")
    row.wait_for()
    cells = row.locator("td").all_inner_texts()
    assert cells == [member, "Active", "10.0.0.7", "192.0.2.10", "partition-1", "network-partition-1"]
    application = page.locator(f'[data-application="{APP}"]')
    assert "Active" in application.locator("summary").first.inner_text()
    page.locator("#live.on").wait_for()
    chart = page.locator(f'[data-chart="{CLUSTER}"] .figures')
    expect(chart).to_contain_text("members 1 (active 1) · load 0.8")
    page.locator('#events tr[data-event="MemberActivated"]').first.wait_for()

    page.evaluate("window.stillTheSamePage = true")
    # the time slider below moves in whole seconds: the one-member tree must have lasted a few
    # (this page's steps took 1-2 s here), so that an instant inside it can be travelled to
    wait_until(lambda: time.time() - one_member_since >= 3, timeout=5, message="3 s of one member")
    one_member_until = time.time()
    assert isinstance(
        client.call(
            CLUSTER_KEY, C.ScaleCluster(required=2, metric="load_average", reason="test load", figures={"load": 0.8})
        ),
        CommandAccepted,
    )
    rows = page.locator("table.members tbody tr[data-member]")
    page.wait_for_function("() => document.querySelectorAll('table.members tbody tr[data-member]').length === 2")
    second = next(m for m in rows.evaluate_all("rows => rows.map(r => r.dataset.member)") if m != member)
    activate(client, second, "10.0.0.8")
    member_row(page, second, "Active").wait_for()
    assert page.evaluate("window.stillTheSamePage") is True  # updated in place, not reloaded
    page.locator('#events tr[data-event="ScalingDecided"]').first.wait_for()
    expect(chart).to_contain_text("members 2 (active 2)")

    # why: clicking the decision follows its cause, the ScaleCluster command and its figures
    page.locator('#events tr[data-event="ScalingDecided"]').first.click()
    expect(page.locator("#why li").first).to_contain_text("ScalingDecided")
    expect(page.locator('#why li[data-type="ScaleCluster"]')).to_contain_text("reason=test load")

    # the time slider rebuilds the tree as it was before the scale-out: one member, then live again
    # (aimed at the middle of the one-member seconds: rounding to a second moves it 0.5 s at most)
    seconds_ago = round(time.time() - (one_member_since + one_member_until) / 2)
    page.evaluate(f"""() => {{ const at = document.querySelector('#at'); at.value = -{seconds_ago};
                              at.dispatchEvent(new Event('change')); }}""")
    expect(page.locator("#at-label")).to_contain_text("as it was at")
    page.wait_for_function("() => document.querySelectorAll('table.members tbody tr[data-member]').length === 1")
    page.locator("#back-live").click()
    page.wait_for_function("() => document.querySelectorAll('table.members tbody tr[data-member]').length === 2")

    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "console.png"), full_page=True)


def test_a_wrong_password_keeps_the_login_form_with_the_reason(api, page):
    log_in(page, api, password="wrong")
    expect(page.locator("#login-error")).to_have_text("wrong user name or password")
    assert page.locator("#console").is_hidden()


def first_state(url: str, username: str, password: str) -> dict:
    with (
        httpx.Client(base_url=url, timeout=30) as anonymous,
        anonymous.stream("GET", "/api/console/stream", auth=(username, password)) as stream,
    ):
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        for line in stream.iter_lines():
            if line.startswith("data:"):
                return json.loads(line.removeprefix("data:"))
    raise AssertionError("the stream ended before its first state")


def test_the_stream_needs_credentials_and_shows_only_the_callers_tenant(api):
    with httpx.Client(base_url=api) as anonymous:
        refused = anonymous.get("/api/console/stream")
    assert refused.status_code == 401 and "credentials" in refused.json()["message"]

    with rest(api) as admin:
        define_samples(admin)
        reply = admin.post(
            "/tenants",
            json={"tenantDomain": "other.org", "admin": "boss", "adminPassword": "other-pw", "email": "boss@other.org"},
        )
        assert reply.status_code == 201, reply.text
    # the feed follows the events topic on its own: its first state shows them once it has read them
    mine = wait_until(
        lambda: (
            (state := first_state(api, "admin", PASSWORD))
            and f"application/{APP}" in {e["aggregate"] for e in state["events"]}
            and state
        ),
        timeout=30,
        message="the application's events in the console's first state",
    )
    assert [a["applicationId"] for a in mine["applications"]] == [APP]
    theirs = first_state(api, "boss@other.org", "other-pw")
    assert theirs == {**theirs, "applications": [], "clusters": [], "events": []}

    # replay and why are scoped the same way: the other tenant neither sees nor can explain ours
    event_id = next(e["id"] for e in mine["events"] if e["aggregate"] == f"application/{APP}")
    now = datetime.now(UTC).isoformat()
    with rest(api) as admin, rest(api, "boss@other.org", "other-pw") as boss:
        assert [a["applicationId"] for a in admin.get("/replay", params={"at": now}).json()["applications"]] == [APP]
        assert boss.get("/replay", params={"at": now}).json()["applications"] == []
        chain = admin.get(f"/why/{event_id}").json()["chain"]
        assert chain[0]["id"] == event_id and chain[0]["topic"] == "events"
        hidden = boss.get(f"/why/{event_id}")
        assert hidden.status_code == 404 and event_id in hidden.json()["message"]
        bad = admin.get("/replay", params={"at": "yesterday"})
        assert bad.status_code == 400 and "at:" in bad.json()["message"]


def test_records_that_do_not_validate_on_the_health_topic_are_skipped_and_load_still_shows(settings, api, client):
    member = deploy_sample(api)
    activate(client, member, "10.0.0.9")
    appender = Appender(settings)
    try:
        appender.send_raw(settings.topic("health"), CLUSTER_KEY.encode(), b"{not json")
        appender.send_raw(
            settings.topic("health"),
            CLUSTER_KEY.encode(),
            json.dumps({"type": "HealthStat", "payload": {"type": "HealthStat", "value": -1}}).encode(),
        )
        appender.flush()
    finally:
        appender.close()
    publish_load(settings, member, 1.5)

    def loaded_chart():
        clusters = first_state(api, "admin", PASSWORD)["clusters"]
        return clusters and clusters[0]["points"][-1][1:4] == [1, 1, 1.5]

    wait_until(loaded_chart, message="the cluster's chart point with one active member and load 1.5")
    # why a cluster has its members, on request (no verdict of a steady cluster is in the log)
    with rest(api) as admin:
        explained = admin.get(f"/why/cluster/{CLUSTER}").json()
        unknown = admin.get("/why/cluster/no.such.cluster")
    assert explained["cluster"] == CLUSTER_KEY and explained["members"]["active"] == 1
    assert explained["verdict"]["required"] >= 1 and "changes_cluster" in explained["verdict"]
    assert unknown.status_code == 404 and "no.such.cluster" in unknown.json()["message"]


def test_the_server_stops_while_a_console_stream_is_open(settings, running_node):
    own = settings.model_copy(update={"admin_password": SecretStr(PASSWORD), "password_hash_rounds": 4})
    server = ApiServer(create_app(own), port=free_port()).start()
    with (
        httpx.Client(base_url=server.url, timeout=60) as viewer,
        viewer.stream("GET", "/api/console/stream", auth=("admin", PASSWORD)) as stream,
    ):
        assert next(stream.iter_lines()) == "event: state"
        server.stop()
        assert not server.thread.is_alive()
