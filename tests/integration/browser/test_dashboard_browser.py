"""The web dashboard in a real browser (headless Chromium) against a real master and
real workers (secure mode: HTTPS, tokens, joined workers).

The page must load with no console error, show a new worker within 2 s of its first
heartbeat, show a killed worker inactive, draw a worker's stored history, tail a running
task's output as it grows, show a new task on the tasks page from the stream's events
(no new read of the list), follow a task's state on its page and a worker's tasks on
its page from the same events, show a firing alert on the alerts page and beside its
link and silence it, say when a failed task's next attempt starts, let an admin
cancel a task (a read token is told no), and reconnect by itself when the master
restarts.
Screenshots of the overview and of a worker's page are left in build/dashboard/.
"""

from __future__ import annotations

import json
import shlex
import ssl
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from cloudai.api.models import AlertRuleSpec
from cloudai.security.tokens import Scope
from tests.harness import REPO, Process, admin_client, start_master, start_worker, wait_until
from tests.integration.browser.chromium import require_browser

INACTIVITY_TIMEOUT = 3.0  # s: a killed worker turns inactive quickly
SCREENSHOTS = REPO / "build" / "dashboard"


@dataclass
class Cluster:
    tmp: Path
    master: Process
    workers: dict[str, Process] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return str(self.master.extra["http"])

    @property
    def token(self) -> str:
        return str(self.master.extra["admin_token"])

    def get(self, path: str, token: str | None = None) -> tuple[int, dict[str, str], bytes]:
        tls = ssl.create_default_context(cafile=self.master.extra["ca_file"])
        request = urllib.request.Request(self.url + path)
        if token is not None:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=10, context=tls) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as error:
            return error.code, dict(error.headers), error.read()

    def join(self, worker_id: str) -> Process:
        join = admin_client(self.master).create_join_token(uses=1, worker_id=worker_id)
        grpc = self.master.extra["grpc"]
        token = join.token
        worker = start_worker(self.tmp, worker_id, "--interval", "0.5", master=grpc, join=token)
        self.workers[worker_id] = worker
        return worker


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    require_browser()
    tmp = tmp_path_factory.mktemp("dashboard")
    master = start_master(tmp, "--inactivity-timeout", str(INACTIVITY_TIMEOUT), secure=True)
    cluster = Cluster(tmp, master)
    try:
        cluster.join("w1")
        yield cluster
    finally:
        for worker in cluster.workers.values():
            worker.close()
        cluster.master.close()  # the one running now (a test restarts it)


# -- the browser ------------------------------------------------------------------------------


def console_errors(driver: Any) -> list[str]:
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def find(driver: Any, css: str) -> list[Any]:
    from selenium.webdriver.common.by import By

    return list(driver.find_elements(By.CSS_SELECTOR, css))


def wait_css(driver: Any, css: str, timeout: float = 10.0) -> Any:
    return wait_until(lambda: (find(driver, css) or [None])[0], timeout, f"{css} on the page")


def go(driver: Any, fragment: str) -> None:
    driver.execute_script("window.location.hash = arguments[0]", fragment)


def open_dashboard(driver: Any, cluster: Cluster, token: str | None = None) -> None:
    """The page with ``token`` (the admin's by default) given in the URL fragment."""
    driver.get(f"{cluster.url}/#token={token or cluster.token}")
    wait_css(driver, "#conn[data-state='live']", 15)


def row_state(driver: Any, worker_id: str) -> str | None:
    rows = find(driver, f"#workers .row[data-worker-id='{worker_id}']:not([hidden])")
    return rows[0].get_attribute("data-state") if rows else None


def screenshot(driver: Any, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(SCREENSHOTS / name))


# -- the tests --------------------------------------------------------------------------------


def test_page_and_assets_are_open_data_needs_a_token(cluster: Cluster) -> None:
    status, headers, body = cluster.get("/")
    assert status == 200 and b"<title>CloudAI</title>" in body
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    asset = body.split(b'src="', 1)[1].split(b'"', 1)[0].decode()
    assert asset.startswith("/assets/")
    status, headers, _ = cluster.get(asset)
    assert status == 200 and headers["Content-Type"].startswith("text/javascript")
    assert "immutable" in headers["Cache-Control"]
    assert cluster.get("/assets/no-such-file.js")[0] == 404
    assert cluster.get("/api/workers")[0] == 401
    assert cluster.get("/api/workers", cluster.token)[0] == 200


def test_login_form_then_overview_without_console_errors(chromium: Any, cluster: Cluster) -> None:
    chromium.get(f"{cluster.url}/")
    token_input = wait_css(chromium, "#login #token")
    token_input.send_keys("cloudai.000000000000.wrong")
    token_input.submit()
    wait_until(
        lambda: "does not accept" in wait_css(chromium, "#login-line").text, 10, "the refusal"
    )
    token_input = wait_css(chromium, "#login #token")
    token_input.clear()
    token_input.send_keys(cluster.token)
    token_input.submit()
    wait_css(chromium, "#conn[data-state='live']", 15)
    wait_until(lambda: row_state(chromium, "w1") == "active", 15, "w1 active on the page")
    wait_until(lambda: wait_css(chromium, "[data-total='active'] b").text == "1", 5, "the totals")
    # The 401s (no token yet, then a wrong one) are logged as failed loads: with the good
    # token kept, a reload logs no error at all.
    console_errors(chromium)  # (reading the log empties it)
    chromium.get(f"{cluster.url}/")
    wait_until(lambda: row_state(chromium, "w1") == "active", 15, "w1 after a reload")
    assert console_errors(chromium) == []


def test_new_worker_appears_within_2s_of_its_first_heartbeat(
    chromium: Any, cluster: Cluster
) -> None:
    open_dashboard(chromium, cluster)
    api = admin_client(cluster.master)
    cluster.join("w2")

    def first_heartbeat() -> bool:
        return any(w.worker_id == "w2" and w.last_update for w in api.workers())

    wait_until(first_heartbeat, 20, "w2's first heartbeat at the master")
    wait_until(lambda: row_state(chromium, "w2") is not None, 2.0, "w2 on the page")
    wait_until(lambda: row_state(chromium, "w2") == "active", 5, "w2 active on the page")
    screenshot(chromium, "overview.png")


def test_killed_worker_turns_inactive_on_the_page(chromium: Any, cluster: Cluster) -> None:
    open_dashboard(chromium, cluster)
    wait_until(lambda: row_state(chromium, "w2") == "active", 15, "w2 active on the page")
    cluster.workers["w2"].kill()
    wait_until(
        lambda: row_state(chromium, "w2") == "inactive",
        INACTIVITY_TIMEOUT + 15,
        "w2 inactive on the page",
    )
    wait_until(lambda: wait_css(chromium, "[data-total='inactive'] b").text == "1", 5, "the totals")


def history_points(cluster: Cluster, worker_id: str) -> int:
    now = int(time.time())
    query = f"metrics=cpu_usage&from={now - 600}&to={now + 5}&points=100"
    status, _, body = cluster.get(f"/api/workers/{worker_id}/history?{query}", cluster.token)
    if status == 404 and b"no such worker" not in body.lower():
        pytest.skip("this master has no history endpoint yet")
    assert status == 200, body
    return sum(1 for v in json.loads(body)["series"]["cpu_usage"]["avg"] if v is not None)


def test_worker_chart_starts_from_history(chromium: Any, cluster: Cluster) -> None:
    wait_until(lambda: history_points(cluster, "w1") >= 3, 30, "stored history of w1")
    open_dashboard(chromium, cluster)
    go(chromium, "#/worker/w1")
    note = wait_css(chromium, "#history-note[data-history]", 15)
    assert int(note.get_attribute("data-history")) >= 1, note.text
    wait_css(chromium, "#chart canvas")
    wait_css(chromium, "[data-figure='State']")
    screenshot(chromium, "worker.png")
    assert console_errors(chromium) == []


def submit(cluster: Cluster, code: str) -> str:
    command = f"{shlex.quote(sys.executable)} -u -c {shlex.quote(code)}"
    return admin_client(cluster.master).submit("w1", command=command).task_id


def log_length(driver: Any) -> int:
    return int(wait_css(driver, "#log").get_attribute("data-length") or 0)


def test_log_tail_grows_while_a_task_prints(chromium: Any, cluster: Cluster) -> None:
    printer = "import time\nfor i in range(400):\n    print('line', i)\n    time.sleep(0.05)"
    task_id = submit(cluster, printer)
    status, _, body = cluster.get(f"/api/tasks/{task_id}/output", cluster.token)
    if status == 404 and b"no such task" not in body.lower():
        pytest.skip("this master has no task output endpoint yet")
    open_dashboard(chromium, cluster)
    go(chromium, f"#/tasks/{task_id}")
    wait_until(lambda: log_length(chromium) > 0, 15, "the first output on the page")
    first = log_length(chromium)
    wait_until(lambda: log_length(chromium) > first, 10, "more output on the page")
    assert wait_css(chromium, "#log-note").get_attribute("data-live") == "true"
    assert admin_client(cluster.master).task(task_id).status in ("running", "assigned")


def test_admin_cancels_a_task_from_the_page_a_read_token_is_offered_no_cancel(
    chromium: Any, cluster: Cluster
) -> None:
    api = admin_client(cluster.master)
    task_id = submit(cluster, "import time\ntime.sleep(120)")
    wait_until(lambda: api.task(task_id).status == "running", 20, "the task running")
    read = api.create_api_token(Scope.READ, "dashboard-test").token
    open_dashboard(chromium, cluster, read)  # GET /api/session: scope read
    go(chromium, "#/tasks")
    wait_css(chromium, f"tr[data-task-id='{task_id}']")
    assert not find(chromium, f"button[data-cancel='{task_id}']")
    go(chromium, f"#/tasks/{task_id}")
    wait_css(chromium, f".task[data-task-id='{task_id}'][data-status='running']", 10)
    assert not find(chromium, f".actions button[data-cancel='{task_id}']")
    assert api.task(task_id).status == "running"

    open_dashboard(chromium, cluster)  # the admin's token
    go(chromium, f"#/tasks/{task_id}")
    wait_css(chromium, f".actions button[data-cancel='{task_id}']").click()
    wait_until(lambda: api.task(task_id).status == "cancelled", 20, "the task cancelled")
    wait_css(chromium, ".task[data-status='cancelled']", 10)


def test_a_task_waiting_for_its_next_attempt_shows_when(chromium: Any, cluster: Cluster) -> None:
    """A failing task with retries: between runs its page says which attempt ran, when
    the next one starts and how the earlier ones ended (the back-off doubles from 1 s:
    the fourth wait is 8 s)."""
    command = f"{shlex.quote(sys.executable)} -c 'raise SystemExit(3)'"
    api = admin_client(cluster.master)
    task_id = api.submit("w1", command=command, retries=4).task_id
    open_dashboard(chromium, cluster)
    go(chromium, f"#/tasks/{task_id}")
    wait_css(chromium, f".task[data-task-id='{task_id}']")
    next_attempt = wait_css(chromium, "[data-figure='Next attempt'] b", 30)
    assert any(ch.isdigit() for ch in next_attempt.text), next_attempt.text  # a time
    attempt = wait_css(chromium, "[data-figure='Attempt'] b").text
    assert attempt.endswith(" of 5"), attempt
    first = wait_css(chromium, "#attempts tr[data-attempt='1']", 10)
    assert first.get_attribute("data-status") == "failure"
    assert [c.text for c in first.find_elements("css selector", "td")][3] == "3"  # exit code
    api.cancel(task_id)


def task_list_reads(driver: Any, path: str = "/api/tasks") -> int:
    """The page's finished reads of ``path`` (the task list by default), from the
    browser's own record of its requests since the page loaded."""
    script = (
        "return performance.getEntriesByType('resource')"
        ".filter(e => new URL(e.name).pathname === arguments[0]).length"
    )
    return int(driver.execute_script(script, path))


def test_tasks_page_shows_a_new_task_from_the_stream_without_reading_the_list_again(
    chromium: Any, cluster: Cluster
) -> None:
    """Once the stream's task events come, the page reads the list again only every 30 s:
    a task that shows within 1.5 s of its submission, and then turns `success` with its
    exit code, came from the events (the test counts the page's reads of the list)."""
    open_dashboard(chromium, cluster)
    console_errors(chromium)  # (reading the log empties it)
    go(chromium, "#/tasks")
    wait_css(chromium, ".tasks-page[data-live='true']", 10)
    wait_until(lambda: task_list_reads(chromium) >= 1, 5, "the page's read of the list")
    wait_css(chromium, "#tasks table, #tasks .empty", 5)
    reads = task_list_reads(chromium)

    task_id = submit(cluster, "print('done')")
    wait_css(chromium, f"tr[data-task-id='{task_id}']", 1.5)
    assert task_list_reads(chromium) == reads
    row = wait_css(chromium, f"tr[data-task-id='{task_id}'][data-status='success']", 15)
    cells = [cell.text for cell in row.find_elements("css selector", "td")]
    assert cells[1] == "success" and cells[5] == "0", cells
    assert task_list_reads(chromium) == reads
    assert admin_client(cluster.master).task(task_id).status == "success"
    assert console_errors(chromium) == []


def test_a_task_page_and_a_worker_page_follow_the_task_events_without_polling(
    chromium: Any, cluster: Cluster
) -> None:
    """Without the events a task's page reads the task every 2 s and a worker's page its
    tasks every 3 s; with them, a task that runs for 3 s and ends shows its new state on
    both pages with no further read (the test counts the pages' reads)."""
    api = admin_client(cluster.master)
    open_dashboard(chromium, cluster)
    go(chromium, "#/worker/w1")
    wait_css(chromium, "#worker-tasks[data-live='true']", 10)
    wait_until(lambda: task_list_reads(chromium) >= 1, 5, "the page's read of the tasks")
    reads = task_list_reads(chromium)
    task_id = submit(cluster, "import time\ntime.sleep(3)\nprint('done')")
    wait_css(chromium, f"#worker-tasks tr[data-task-id='{task_id}'][data-status='success']", 20)
    assert task_list_reads(chromium) == reads

    task_id = submit(cluster, "import time\ntime.sleep(3)\nprint('done')")
    path = f"/api/tasks/{task_id}"
    open_dashboard(chromium, cluster)  # a new page: its own record of requests
    go(chromium, f"#/tasks/{task_id}")
    wait_css(chromium, f".task[data-task-id='{task_id}'][data-live='true']", 10)
    wait_until(lambda: task_list_reads(chromium, path) >= 2, 5, "the reads at start and live")
    reads = task_list_reads(chromium, path)
    wait_css(chromium, ".task[data-status='success']", 20)
    assert wait_css(chromium, "[data-figure='Exit code'] b").text == "0"
    assert task_list_reads(chromium, path) == reads
    assert api.task(task_id).status == "success"


def test_alerts_page_and_the_firing_count_follow_the_alert_events(
    chromium: Any, cluster: Cluster
) -> None:
    """An alert that fires shows on the alerts page, in its history and as the count
    beside the Alerts link; an admin silences it and ends the silence from the page (a
    read token has no such button); the rule deleted, it resolves (in the history) and
    goes.
    Each shows within 5 s of a read: the page reads every 10 s, so it came from the
    stream's alert events."""
    api = admin_client(cluster.master)
    open_dashboard(chromium, cluster)
    go(chromium, "#/alerts")
    wait_css(chromium, ".alerts-page[data-live='true']", 10)
    wait_css(chromium, "#alerts .empty, #alerts table", 5)
    assert wait_css(chromium, "#firing").get_attribute("data-firing") == "0"
    reads = task_list_reads(chromium, "/api/alerts")
    wait_until(lambda: task_list_reads(chromium, "/api/alerts") > reads, 15, "a read")
    rule = {"name": "browser-busy", "metric": "cpu_usage", "comparison": ">=", "threshold": 0}
    api.add_alert_rule(AlertRuleSpec.model_validate({**rule, "for": 0, "workers": ["w1"]}))
    try:
        row = wait_css(chromium, "#alerts tr[data-rule='browser-busy'][data-state='firing']", 5)
        assert row.get_attribute("data-worker-id") == "w1"
        wait_css(chromium, "#alert-history tr[data-state='firing']", 5)
        badge = wait_css(chromium, "#firing[data-firing='1']", 5)
        assert badge.is_displayed() and badge.text == "1"

        # An admin silences it from the page, and ends the silence.
        wait_css(chromium, "button[data-silence='browser-busy/w1']").click()
        silence = wait_css(chromium, "#silences tr[data-state='active']", 10)
        assert "alertname=browser-busy, worker_id=w1" in silence.text
        wait_css(chromium, "#firing[data-firing='0']", 5)
        (made,) = api.silences()
        assert made.created_by == "dashboard" and 3500 < made.ends_at - made.starts_at <= 3600
        silence.find_element("css selector", "button[data-end-silence]").click()
        wait_css(chromium, "#silences .empty", 10)
        wait_css(chromium, "#firing[data-firing='1']", 5)
        assert api.silences() == []

        read = api.create_api_token(Scope.READ, "alerts-test").token
        open_dashboard(chromium, cluster, read)
        go(chromium, "#/alerts")
        wait_css(chromium, "#alerts tr[data-rule='browser-busy']", 10)
        assert not find(chromium, "button[data-silence]")
        open_dashboard(chromium, cluster)
        go(chromium, "#/alerts")
        wait_css(chromium, ".alerts-page[data-live='true']", 10)
    finally:
        api.delete_alert_rule("browser-busy")
    wait_css(chromium, "#alert-history tr[data-state='resolved']", 5)  # "rule removed"
    assert not find(chromium, "#alerts tr[data-rule='browser-busy']")
    wait_css(chromium, "#firing[data-firing='0']", 5)
    assert not wait_css(chromium, "#firing").is_displayed()
    assert console_errors(chromium) == []


def test_the_page_reconnects_by_itself_after_a_master_restart(
    chromium: Any, cluster: Cluster
) -> None:
    """Last in this module: the master stops, the page says so and tries again with
    back-off; a master back on the same ports gets it live again with a fresh snapshot,
    and the tasks page subscribes to its events again and reads the list again."""
    open_dashboard(chromium, cluster)
    go(chromium, "#/tasks")
    wait_css(chromium, ".tasks-page[data-live='true']", 10)
    wait_until(lambda: task_list_reads(chromium) >= 1, 5, "the page's read of the list")
    reads = task_list_reads(chromium)
    ports = [str(cluster.master.ready[key]) for key in ("grpc_port", "http_port")]
    cluster.master.close()
    wait_css(chromium, "#conn[data-state='reconnecting']", 15)
    wait_css(chromium, ".tasks-page[data-live='false']", 5)
    cluster.master = start_master(
        cluster.tmp,
        "--inactivity-timeout",
        str(INACTIVITY_TIMEOUT),
        "--grpc-port",
        ports[0],
        "--http-port",
        ports[1],
        secure=True,
    )
    wait_css(chromium, "#conn[data-state='live']", 30)  # by itself, after its back-off
    wait_css(chromium, ".tasks-page[data-live='true']", 10)
    wait_until(lambda: task_list_reads(chromium) > reads, 10, "the list read again")
    wait_css(chromium, "tr[data-task-id]", 10)
    go(chromium, "#/")
    wait_until(lambda: row_state(chromium, "w1") == "active", 30, "w1 active on the page again")
