"""Operating the platform from the web console, in real headless Chromium against one running
platform for the module (real broker, a node and its reactor, the cloud controller with the mock
IaaS's simulated instances, a health worker; short windows): every action is made by clicking
and typing in the page, as an operator would, and checked both on the page and through the API.

Screenshots go to test-artifacts/; axe-core (vendored by `make console-assets`) checks each page.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import expect
from pydantic import SecretStr
from typer.testing import CliRunner

from infra.api.app import create_app
from infra.api.console.routes import VENDOR
from infra.api.server import ApiServer
from infra.broker import free_port
from infra.cli.main import app as stratos
from infra.health.app import HealthWorkerThread
from infra.log.kafka import ensure_topics
from infra.observe.follower import stop_together
from infra.settings import Settings
from tests.conftest import RunningNode, wait_until
from tests.test_cloud_controller import RunningCloud
from tests.test_console import ARTIFACTS, chromium, log_in  # noqa: F401 - fixture
from tests.test_scaling_acceptance import CALM_FAULT_SECONDS

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "infra" / "samples"
PASSWORD = "operate-pw"
APP = "single-cartridge-app"
CLUSTER = f"{APP}.php1.php.domain"
DEFINED = [  # the sample's definitions in the order their references need: (kind, file, id)
    ("networkPartitions", "network-partition.json", "network-partition-1"),
    ("cartridges", "php.json", "php"),
    ("autoscalingPolicies", "autoscaling-policy.json", "autoscaling-policy-1"),
    ("deploymentPolicies", "deployment-policy.json", "deployment-policy-1"),
    ("applicationPolicies", "application-policy.json", "application-policy-1"),
    ("applications", "application-single-cartridge.json", APP),
]
WRITE_WAIT_SECONDS = 90.0
"""How long the API waits for a command's effect: a first command on a machine this busy may
take longer than the default 20 s (the page then shows the API's 504, and the test would fail)."""
WRITE_WAIT_MS = int(WRITE_WAIT_SECONDS * 1000)
LAZY = {  # another autoscaling policy, typed into the editor, for what-if
    "id": "lazy-scaling",
    "loadThresholds": {"loadAverage": {"threshold": 95}, "memoryConsumption": {"threshold": 95}},
}


class Platform:
    def __init__(self, broker, state_dir: Path) -> None:
        settings = Settings(
            kafka_bootstrap=broker.bootstrap,
            topic_prefix=f"t{uuid.uuid4().hex[:8]}.",
            partitions=4,
            admin_password=SecretStr(PASSWORD),
            password_hash_rounds=4,
            state_dir=state_dir,
            health_window_seconds=3.0,
            health_hop_seconds=0.5,
            health_publish_seconds=0.5,
            member_fault_seconds=CALM_FAULT_SECONDS,
            cloud_reconcile_seconds=0.5,
            cloud_retry_seconds=0.1,
            api_wait_seconds=WRITE_WAIT_SECONDS,
        )
        ensure_topics(settings)
        self.node = RunningNode(settings)
        self.cloud = RunningCloud(settings)
        self.worker = HealthWorkerThread(settings).start()
        self.settings = settings.model_copy(
            update={"mock_iaas_url": self.cloud.service.url, "mock_iaas_key": SecretStr(self.cloud.service.key)}
        )
        self.server = ApiServer(create_app(self.settings), port=free_port()).start()
        self.url = self.server.url

    def client(self, username: str = "admin", password: str = PASSWORD) -> httpx.Client:
        return httpx.Client(base_url=self.url, auth=(username, password), timeout=60)

    def stop(self) -> None:
        stop_together(self.server.stop, self.worker.stop, self.cloud.stop, self.node.stop)


@pytest.fixture(scope="module")
def platform(broker, tmp_path_factory) -> Iterator[Platform]:
    if not (VENDOR / "monaco" / "vs" / "loader.js").exists():
        pytest.fail("the console's front-end code is missing: run `make console-assets`")
    running = Platform(broker, tmp_path_factory.mktemp("console-operate"))
    yield running
    running.stop()


@pytest.fixture
def page(chromium):  # noqa: F811 - the shared browser
    context = chromium.new_context(viewport={"width": 1400, "height": 1000})
    context.grant_permissions(["clipboard-read", "clipboard-write"])
    made = context.new_page()
    made.set_default_timeout(30_000)
    made.on("dialog", lambda dialog: dialog.accept())  # "Remove …?", "Undeploy …?": yes
    errors: list[str] = []
    made.on("pageerror", lambda error: errors.append(str(error)))
    yield made
    context.close()
    assert errors == [], f"the page's scripts failed: {errors}"


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"console-{name}.png"), full_page=True)


def no_serious_accessibility_issue(page, where: str) -> None:
    """axe-core in the page: no violation of impact serious or critical."""
    if not page.evaluate("() => typeof axe === 'object'"):
        page.add_script_tag(path=str(VENDOR / "axe-core" / "axe.min.js"))
    found = page.evaluate(
        """async () => (await axe.run(document, {resultTypes: ["violations"]})).violations
             .filter((v) => ["serious", "critical"].includes(v.impact))
             .map((v) => `${v.id}: ${v.help} at ${v.nodes.map((n) => n.target.join(" ")).join(", ")}`)"""
    )
    assert found == [], f"{where}: {found}"


def go(page, name: str) -> None:
    page.click(f'#pages button[data-page="{name}"]')
    expect(page.locator(f"#page-{name}")).to_be_visible()


def paste_into_editor(page, text: str) -> None:
    """Select all in the editor and paste the text over it (Ctrl+A, Ctrl+V)."""
    page.locator('#editor-panel[aria-busy="false"] #editor .monaco-editor').wait_for()
    page.evaluate("(text) => navigator.clipboard.writeText(text)", text)
    page.click("#editor .view-lines")
    page.keyboard.press("Control+A")
    page.keyboard.press("Control+V")


def new_definition(page) -> None:
    page.click("#def-new")
    page.locator('#editor-panel[aria-busy="false"]').wait_for()


def define_from_file(page, kind: str, path: Path, id: str) -> None:
    page.click(f'#def-kinds button[data-kind="{kind}"]')
    new_definition(page)
    page.set_input_files("#editor-file", str(path))
    page.click("#editor-save")
    expect(page.locator("#def-result")).to_contain_text("added successfully", timeout=WRITE_WAIT_MS)
    expect(page.locator(f'#def-list tr[data-id="{id}"]')).to_be_visible()


def remove_in_console(page, kind: str, id: str) -> None:
    """Click Remove until the definition is gone: right after an undeploy, a definition may still
    be in use for a moment (the page then says by what)."""
    page.click(f'#def-kinds button[data-kind="{kind}"]')
    row = page.locator(f'#def-list tr[data-id="{id}"]')

    def removed() -> bool:
        page.click(f'#def-list tr[data-id="{id}"] button[data-remove]')
        done = page.locator("#def-result", has_text="removed successfully")
        problem = page.locator(f'tr[data-problem="{id}"]')
        expect(done.or_(problem)).to_be_visible(timeout=WRITE_WAIT_MS)
        if problem.is_visible():
            return False
        expect(row).to_have_count(0)
        return True

    wait_until(removed, timeout=60, message=f"{kind} {id} removed in the console")


def load(platform: Platform, value: float) -> None:
    """What the simulated instances report from now on: this load average, memory 20 %."""
    patterns = {
        "load-average": {"sampleValues": [value], "sampleDuration": 600, "mode": "continue"},
        "memory-consumption": {"sampleValues": [20], "sampleDuration": 600, "mode": "continue"},
    }
    with platform.client() as admin:
        assert admin.put("/mock-iaas/api/health-patterns/php", json=patterns).status_code == 200


def members(page, status: str):
    return page.locator(f'#applications tr[data-member][data-status="{status}"]')


def test_an_admin_defines_deploys_scales_debugs_undeploys_and_removes_from_the_console(platform, page, tmp_path):
    load(platform, 60)  # under the sample policy's threshold (70): the cluster stays at its min, 2
    application = json.loads((SAMPLES / "application-single-cartridge.json").read_text())
    application["components"]["cartridges"][0]["subscribableInfo"].pop("artifactRepository")  # offline
    (tmp_path / "application.json").write_text(json.dumps(application))
    period_from = page.evaluate("() => new Date().toISOString()")

    log_in(page, platform.url, "admin", PASSWORD)
    go(page, "definitions")
    for kind, name, id in DEFINED:
        define_from_file(page, kind, tmp_path / "application.json" if kind == "applications" else SAMPLES / name, id)
    page.click('#def-kinds button[data-kind="autoscalingPolicies"]')
    new_definition(page)
    paste_into_editor(page, json.dumps(LAZY, indent=2))
    shot(page, "editor")
    no_serious_accessibility_issue(page, "definitions with the editor open")
    page.click("#editor-save")
    expect(page.locator('#def-list tr[data-id="lazy-scaling"]')).to_be_visible()
    with platform.client() as admin:  # what the console defined is what the API has
        for kind, _name, id in DEFINED:
            assert admin.get(f"/api/{kind}/{id}").status_code == 200, (kind, id)
        typed = admin.get("/api/autoscalingPolicies/lazy-scaling").json()["loadThresholds"]
        assert (typed["loadAverage"], typed["memoryConsumption"]) == ({"threshold": 95.0}, {"threshold": 95.0})

    # deploy: the members show up in the tree and become Active, without a reload
    go(page, "runtime")
    page.evaluate("window.stillTheSamePage = true")
    page.select_option("#act-app", APP)
    page.select_option("#act-policy", "application-policy-1")
    page.click("#deploy")
    expect(page.locator("#act-result")).to_contain_text("Application deployed successfully")
    expect(members(page, "Active")).to_have_count(2, timeout=90_000)
    expect(page.locator(f'[data-application="{APP}"] summary').first).to_contain_text("Active")
    assert page.evaluate("window.stillTheSamePage") is True
    shot(page, "deployed")
    no_serious_accessibility_issue(page, "runtime with a deployed application")

    # limits, live: max 6 -> 3, as the API and the tree then say
    page.select_option("#act-alias", "php1")
    expect(page.locator("#act-max")).to_have_value("6")
    page.fill("#act-max", "3")
    page.click("#update-limits")
    expect(page.locator("#act-result")).to_contain_text("now min 2, max 3")
    expect(page.locator(f'#applications details[data-key="cluster:{CLUSTER}"] > summary')).to_contain_text("max 3")
    with platform.client() as admin:
        assert admin.get(f"/api/cluster/{CLUSTER}").json()["maxInstances"] == 3
    # load 72: ceil(2 * 72 / 70) = 3 members, the new max; the tree follows the scale-out.
    # A step of 12 keeps every prediction under the lazy policy's 95 for the what-if below:
    # with the 1 s floor on spans, the slope and curvature terms add at most 12 + 12 / 2 to
    # 72 (a step to 80 can predict up to 110 on bunched samples: in one CI run lazy scaled too).
    load(platform, 72)
    expect(members(page, "Active")).to_have_count(3, timeout=90_000)

    # in use: removing the cartridge says what uses it, and leaves it
    go(page, "definitions")
    page.click('#def-kinds button[data-kind="cartridges"]')
    page.click('#def-list tr[data-id="php"] button[data-remove]')
    expect(page.locator('tr[data-problem="php"] ul.in-use li')).to_have_text([f"application '{APP}'"])
    expect(page.locator('#def-list tr[data-id="php"]')).to_be_visible()

    # debugging: the cluster's decisions, then what the lazy policy would have decided
    with platform.client() as admin:
        wait_until(
            lambda: any(
                e["type"] == "ScalingDecided" for e in admin.get(f"/api/cluster/{CLUSTER}/history").json()["entries"]
            ),
            timeout=60,
            message="a recorded scaling decision",
        )
    go(page, "debugging")
    page.select_option("#debug-cluster", CLUSTER)
    # the period: from just before the deployment until now, typed as the page shows local time
    since, until = page.evaluate(
        "(from) => [localInput(new Date(Date.parse(from) - 1000)), localInput(new Date(Date.now() + 1000))]",
        period_from,
    )
    page.fill("#debug-from", since)
    page.fill("#debug-to", until)
    page.click("#history-show")
    expect(page.locator('#history tr[data-event="ScalingDecided"]').first).to_be_visible()
    expect(page.locator('#history tr[data-event="ClusterCreated"]')).to_have_count(1)
    page.select_option("#whatif-policy", "lazy-scaling")
    page.click("#whatif-run")
    figure = page.locator("#whatif-figure")
    expect(figure).to_be_visible()
    hops = int(figure.get_attribute("data-hops"))
    assert hops > 0
    # load 72 with two members: the sample's threshold 70 started a third, 95 would not have
    expect(page.locator("#whatif-totals")).to_contain_text(f"{hops} decisions compared")
    totals = page.locator("#whatif-totals").inner_text()
    assert re.search(r"scale-ups decided [1-9]\d*, would have been 0;", totals), totals
    expect(page.locator("#whatif-hops tbody tr").first).to_be_visible()
    drawn = page.evaluate(
        """() => { const c = document.querySelector('#whatif-chart');
                   const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                   let orange = 0; for (let i = 0; i < d.length; i += 4) if (d[i] > 150 && d[i + 2] < 60) orange++;
                   return orange; }"""
    )
    assert drawn > 0  # the would-have-decided line is on the canvas
    shot(page, "what-if")
    no_serious_accessibility_issue(page, "debugging with a what-if chart")
    with platform.client() as admin:  # the API behind it names what it refuses
        bad_policy = {"id": "x", "loadThresholds": {"loadAverage": {"threshold": "high"}}}
        refused = admin.post(f"/api/cluster/{CLUSTER}/whatif", json={"policy": bad_policy})
        assert refused.status_code == 400
        assert refused.json()["message"].startswith("policy.loadThresholds.loadAverage.threshold: "), refused.text
        refused = admin.post(f"/api/cluster/{CLUSTER}/whatif", json={"policy": LAZY, "from": "yesterday"})
        assert refused.status_code == 400 and refused.json()["message"].startswith("from: "), refused.text
        unknown = admin.post("/api/cluster/no-such-cluster/whatif", json={"policy": LAZY})
        assert unknown.status_code == 404 and "no-such-cluster" in unknown.json()["message"], unknown.text
        assert admin.get(f"/api/cluster/{CLUSTER}/history", params={"until": "soon"}).status_code == 400

    # undeploy: the members leave the tree; then every definition goes, from the console
    go(page, "runtime")
    page.select_option("#act-app", APP)
    page.click("#undeploy")
    expect(page.locator("#act-result")).to_contain_text("Application undeployed successfully")
    expect(page.locator("#applications tr[data-member]")).to_have_count(0, timeout=90_000)
    go(page, "definitions")
    remove_in_console(page, "autoscalingPolicies", "lazy-scaling")
    for kind, _name, id in reversed(DEFINED):
        remove_in_console(page, kind, id)
    with platform.client() as admin:
        for kind, _name, id in DEFINED:
            assert admin.get(f"/api/{kind}/{id}").status_code == 404, (kind, id)
    shot(page, "removed")


def test_tenants_users_a_read_only_user_and_an_invalid_definition(platform, page):
    domain = f"t{uuid.uuid4().hex[:8]}.org"
    log_in(page, platform.url, "admin", PASSWORD)
    go(page, "people")
    page.click('button[data-new-kind="tenants"]')
    tenant = {"tenantDomain": domain, "admin": "boss", "adminPassword": "boss-pw", "email": f"boss@{domain}"}
    paste_into_editor(page, json.dumps(tenant))
    page.click("#editor-save")
    expect(page.locator(f'#tenant-list tr[data-id="{domain}"]')).to_contain_text(f"boss@{domain}")
    no_serious_accessibility_issue(page, "tenants and users")
    page.click("#logout")

    # the tenant's admin adds a read-only user, and gets the API's error at the field it names
    log_in(page, platform.url, f"boss@{domain}", "boss-pw")
    go(page, "people")
    expect(page.locator("#tenants-panel")).to_be_hidden()
    page.click('button[data-new-kind="users"]')
    viewer = {"userName": "viewer", "role": "user", "credential": "viewer-pw", "email": f"viewer@{domain}"}
    paste_into_editor(page, json.dumps(viewer, indent=2))
    page.click("#editor-save")
    expect(page.locator('#user-list tr[data-id="viewer"]')).to_contain_text("user")

    go(page, "definitions")
    page.click('#def-kinds button[data-kind="cartridges"]')
    new_definition(page)
    invalid = json.loads((SAMPLES / "php.json").read_text())
    invalid["category"] = "database"
    invalid["portMapping"][0]["port"] = "eighty"
    paste_into_editor(page, json.dumps(invalid, indent=2))
    page.click("#editor-save")
    errors = page.locator("#editor-errors li")
    expect(errors).to_have_count(2)
    expect(page.locator('#editor-errors li[data-field="category"]')).to_contain_text("Input should be 'framework'")
    expect(page.locator('#editor-errors li[data-field="portMapping.0.port"]')).to_contain_text("valid integer")
    # beside the fields themselves, on their lines in the editor
    lines = [line.replace("\xa0", " ") for line in page.locator("#editor .view-line").all_inner_texts()]
    category = next(line for line in lines if '"category"' in line)
    assert "← Input should be 'framework'" in category, lines
    port = next(line for line in lines if '"eighty"' in line)
    assert "← Input should be a valid integer" in port, lines
    shot(page, "invalid-definition")
    with platform.client(f"boss@{domain}", "boss-pw") as boss:
        assert boss.get("/api/cartridges").json() == []
    paste_into_editor(page, (SAMPLES / "php.json").read_text())  # corrected: saved, the errors gone
    expect(errors).to_have_count(0)
    page.click("#editor-save")
    expect(page.locator("#def-result")).to_contain_text("added successfully", timeout=WRITE_WAIT_MS)
    page.click("#logout")

    # the read-only user sees every page, and no action
    log_in(page, platform.url, f"viewer@{domain}", "viewer-pw")
    expect(page.locator("#who")).to_contain_text("read-only")
    expect(page.locator("#app-actions")).to_be_hidden()
    # by keyboard alone: a page button, a kind, a row's View, Escape closes the editor
    page.focus('#pages button[data-page="definitions"]')
    page.keyboard.press("Enter")
    expect(page.locator("#page-definitions")).to_be_visible()
    page.focus('#def-kinds button[data-kind="cartridges"]')
    page.keyboard.press("Enter")
    expect(page.locator("#def-kind-title")).to_have_text("Cartridges")
    expect(page.locator('#def-list tr[data-id="php"] button')).to_have_text(["View"])  # no Remove
    expect(page.locator("#def-new")).to_be_hidden()
    page.focus('#pages button[data-page="people"]')
    page.keyboard.press("Enter")
    expect(page.locator("#page-people")).to_be_visible()
    page.focus('#user-list tr[data-id="viewer"] button[data-edit]')
    page.keyboard.press("Enter")
    expect(page.locator('#editor-panel[aria-busy="false"]')).to_be_visible()
    page.keyboard.press("Escape")
    expect(page.locator("#editor-panel")).to_be_hidden()
    expect(page.locator('#user-list tr[data-id="viewer"]')).to_be_visible()
    expect(page.locator('#user-list button[data-remove], [data-new-kind="users"]:visible')).to_have_count(0)
    page.click('#user-list tr[data-id="viewer"] button[data-edit]')
    expect(page.locator("#editor-title")).to_have_text("user viewer")
    expect(page.locator("#editor-save")).to_be_hidden()
    go(page, "debugging")
    expect(page.locator("#history-show")).to_be_visible()  # a cluster's history is every user's
    expect(page.locator("#whatif-run")).to_be_hidden()  # a what-if, like a replay, its admins'
    expect(page.locator("#timetravel")).to_be_hidden()
    visible_actions = page.locator(
        "#deploy:visible, #undeploy:visible, #update-limits:visible, #def-new:visible, button[data-remove]:visible"
    )
    expect(visible_actions).to_have_count(0)
    shot(page, "read-only")
    no_serious_accessibility_issue(page, "the read-only user's pages")
    with platform.client(f"viewer@{domain}", "viewer-pw") as reader:  # and the API refuses anyway
        refused = reader.post("/api/cartridges", json=json.loads((SAMPLES / "php.json").read_text()))
        assert refused.status_code == 403, refused.text
        refused = reader.post(f"/api/cluster/{CLUSTER}/whatif", json={"policy": LAZY})
        assert refused.status_code == 403, refused.text


def test_a_simulation_report_opens_in_the_viewer(platform, page, tmp_path):
    out = tmp_path / "report"
    result = CliRunner().invoke(
        stratos,
        [
            "simulate",
            str(ROOT / "examples" / "scenarios" / "flash-crowd.yaml"),
            "--out",
            str(out),
            "--policy",
            str(ROOT / "examples" / "policies" / "hpa-like.json"),
            "--policy",
            str(ROOT / "examples" / "policies" / "stratos-default.json"),
        ],
    )
    assert result.exit_code == 0, result.output
    ranking = json.loads((out / "metrics.json").read_text())["ranking"]
    log_in(page, platform.url, "admin", PASSWORD)
    go(page, "debugging")
    page.set_input_files("#report-file", str(out / "metrics.json"))
    first_table = page.locator('#report [data-report="metrics.json"] table').first
    expect(first_table.locator("tbody th")).to_have_text(ranking)
    no_serious_accessibility_issue(page, "the simulation report viewer")
    page.set_input_files("#report-file", str(out / "report.html"))
    frame = page.frame_locator("#report iframe")
    expect(frame.locator("h2").first).to_have_text("Policies, best first")
    shot(page, "simulation-report")
