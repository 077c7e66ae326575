"""The console's log pane and usage chart in real headless Chromium: select a member in the
runtime tree, its lines show in order and new ones arrive live; the usage chart shows the
cluster's member-seconds. Screenshot in test-artifacts/console-logs.png."""

from __future__ import annotations

import httpx
import pytest
from playwright.sync_api import expect

from infra.observe.line_shipper import LogShipper, LogSource
from tests.test_console import (  # noqa: F401 - fixtures
    APP,
    ARTIFACTS,
    PASSWORD,
    activate,
    api,
    chromium,
    deploy_sample,
    log_in,
    member_row,
    page,
)

pytestmark = pytest.mark.integration
CLUSTER_ID = "single-cartridge-app.php1.php.domain"


def test_the_log_pane_follows_the_selected_member_and_the_usage_chart_shows_the_cluster(settings, api, client, page):
    member = deploy_sample(api)
    activate(client, member, "10.0.0.7")
    shipper = LogShipper(settings.model_copy(update={"log_batch_seconds": 0.1}))
    source = LogSource(member, CLUSTER_ID, APP)
    other = LogSource("php1.someone-else", CLUSTER_ID, APP)
    try:
        for n in range(5):
            shipper.emit(source, "INFO", f"boot step {n}")
        shipper.emit(other, "INFO", "not this member's line")
        shipper.emit(source, "ERROR", "a failing step")
        shipper.flush()

        log_in(page, api)
        member_row(page, member, "Active").click()
        expect(page.locator("#logs-of")).to_have_text(f" of {member}")
        items = page.locator("#log-lines li")
        expect(items).to_have_count(6)
        texts = items.evaluate_all("items => items.map(i => i.lastChild.textContent)")
        assert texts == [f"boot step {n}" for n in range(5)] + ["a failing step"]
        expect(page.locator('#log-lines li[data-level="ERROR"]')).to_have_count(1)
        expect(page.locator(f'tr.selected[data-member="{member}"]')).to_have_count(1)

        page.evaluate("window.stillTheSamePage = true")
        shipper.emit(source, "WARNING", "a line that arrives later")
        expect(items).to_have_count(7)
        expect(items.last).to_contain_text("a line that arrives later")
        assert page.evaluate("window.stillTheSamePage") is True

        [row] = httpx.get(f"{api}/api/usage", auth=("admin", PASSWORD), timeout=30).json()["rows"]
        page.reload()  # the chart is drawn on load, then every 10 s; the selected member stays
        expect(items).to_have_count(7)
        usage = page.locator(f'#usage [data-usage="{CLUSTER_ID}"] .figures')
        expect(usage).to_contain_text(f"pending {row['pending_seconds']:.0f} s · scaling actions 0")
        expect(page.locator(f'#usage [data-usage="{CLUSTER_ID}"] .usage-bar .running')).to_have_count(1)
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "console-logs.png"), full_page=True)
    finally:
        shipper.close()
