#!/usr/bin/env python3
"""Screenshots of the web dashboard for the docs (docs/images/dashboard-*.png).

A secure master, a few real workers (one stopped, to show an inactive row), tasks that
burn CPU and print, two alert rules (busy CPU on the GPU nodes, a worker down), then
headless Chromium (Debian's) takes the overview, a worker's page, a task's page and the
alerts page. About a minute.

    .venv/bin/python scripts/dashboard_screenshots.py [OUT_DIR]
"""

from __future__ import annotations

import shlex
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cloudai.api.models import AlertRuleSpec  # noqa: E402
from tests.harness import admin_client, start_master, start_worker, wait_until  # noqa: E402
from tests.integration.browser.chromium import missing_browser, new_chromium  # noqa: E402

WORKERS = ["gpu-node-1", "gpu-node-2", "cpu-node-1", "cpu-node-2", "cpu-node-3", "edge-1"]
BURN = "import time\nt=time.time()\nwhile True:\n    x = sum(range(20000))\n    if time.time()-t > 0.5:\n        print('step', round(time.time()), flush=True)\n        t = time.time()\n        time.sleep(0.4)\n"  # noqa: E501


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "docs" / "images"
    reason = missing_browser()
    if reason:
        raise SystemExit(reason)
    tmp = Path(tempfile.mkdtemp(prefix="cloudai-shots-"))
    master = start_master(tmp, "--inactivity-timeout", "4", secure=True)
    workers = []
    try:
        api = admin_client(master)
        busy = {"metric": "cpu_usage", "threshold": 20, "for": "5s", "workers": "gpu-*"}
        api.add_alert_rule(AlertRuleSpec.model_validate({"name": "busy-gpu-node", **busy}))
        down = {"kind": "worker_inactive", "severity": "critical"}
        api.add_alert_rule(AlertRuleSpec.model_validate({"name": "worker-down", **down}))
        for worker_id in WORKERS:
            token = api.create_join_token(uses=1, worker_id=worker_id).token
            grpc = master.extra["grpc"]
            workers.append(start_worker(tmp, worker_id, "--interval", "1", master=grpc, join=token))
        command = f"{shlex.quote(sys.executable)} -u -c {shlex.quote(BURN)}"
        task_ids = [api.submit(w, command=command).task_id for w in WORKERS[:3]]
        api.submit(WORKERS[3], command="echo done")  # one that finished
        time.sleep(25)  # stored history to show
        workers[-1].kill()  # edge-1 turns inactive
        time.sleep(6)
        driver = new_chromium(tmp / "chromium")
        try:
            url = master.extra["http"]
            driver.get(f"{url}/#token={master.extra['admin_token']}")
            find = "return document.querySelectorAll('#workers .row:not([hidden])').length"
            wait_until(lambda: driver.execute_script(find) == len(WORKERS), 20, "every row")
            time.sleep(15)  # the sparklines fill from the stream
            out.mkdir(parents=True, exist_ok=True)
            driver.set_window_size(1280, 560)
            driver.save_screenshot(str(out / "dashboard-overview.png"))
            driver.set_window_size(1280, 760)
            driver.execute_script("location.hash = '#/worker/gpu-node-1'")
            wait_until(
                lambda: driver.execute_script(
                    "return document.querySelector('#history-note')?.dataset.history"
                ),
                20,
                "the history",
            )
            time.sleep(2)
            driver.save_screenshot(str(out / "dashboard-worker.png"))
            driver.execute_script(f"location.hash = '#/tasks/{task_ids[0]}'")
            time.sleep(4)
            driver.save_screenshot(str(out / "dashboard-task.png"))
            driver.set_window_size(1280, 600)
            driver.execute_script("location.hash = '#/alerts'")
            time.sleep(3)
            driver.save_screenshot(str(out / "dashboard-alerts.png"))
        finally:
            driver.quit()
    finally:
        for worker in workers:
            worker.close()
        master.close()
    print(f"screenshots in {out}")


if __name__ == "__main__":
    main()
