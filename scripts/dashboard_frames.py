#!/usr/bin/env python3
"""Frame times of the web dashboard with many workers updating (docs/PERFORMANCE.md).

Starts a master of ours (plaintext, the simulated workers authorised), drives WORKERS
simulated workers with the bench's heartbeat generator (``cloudai bench --grpc ...``) at
RATE heartbeats per second, opens the dashboard in headless Chromium (Debian's chromium
and chromedriver), sorts the table by CPU (the heavier case: the order changes) and
records, for SECONDS, the interval between animation frames and the time the page spent
redrawing in each. Prints one JSON line per rate; ``--screenshot`` saves the overview.

    .venv/bin/python scripts/dashboard_frames.py --workers 1000 --rates 200,1000
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cloudai.bench.schedule import worker_ids  # noqa: E402
from tests.integration.browser.chromium import missing_browser, new_chromium  # noqa: E402

FRAME_MS = 1000 / 60
COLLECT = """
if (window.__stopFrames) window.__stopFrames();
const frames = [];
let last = performance.now();
let on = true;
window.__frames = frames;
window.__stopFrames = () => { on = false; };
function tick(now) { frames.push(now - last); last = now; if (on) requestAnimationFrame(tick); }
requestAnimationFrame(tick);
// Long animation frames (over 50 ms): how much of each was the page's own work (scripts,
// style, layout, paint) and how much the page simply did not get the CPU.
window.__long = [];
if (window.__loaf) window.__loaf.disconnect();
window.__loaf = new PerformanceObserver((list) => {
  for (const e of list.getEntries()) {
    const scripts = e.scripts.reduce((sum, s) => sum + s.duration, 0);
    const render = e.renderStart ? e.startTime + e.duration - e.renderStart : 0;
    window.__long.push([e.duration, scripts + render]);
  }
});
window.__loaf.observe({ type: "long-animation-frame" });
"""


REDRAWS = """
const d = window.cloudaiDashboard;
const n = d.redrawCount() - arguments[0];
return n > 0 ? d.redraws().slice(-n) : [];
"""


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def start_master(tmp: Path, workers: int) -> tuple[subprocess.Popen[bytes], dict[str, Any]]:
    allow = tmp / "workers.txt"
    allow.write_text("".join(f"{w}\n" for w in worker_ids(workers)))
    ready = tmp / "ready.json"
    log = open(tmp / "master.log", "wb")  # noqa: SIM115 (open for the child's life)
    proc = subprocess.Popen(
        [sys.executable, "-m", "cloudai", "--log-level", "WARNING", "master", "--insecure",
         "--allow-workers-file", str(allow), "--grpc-port", "0", "--http-port", "0",
         "--host", "127.0.0.1", "--no-cli", "--inactivity-timeout", "600",
         "--data-dir", str(tmp / "data"), "--ready-file", str(ready)],
        stdout=log, stderr=subprocess.STDOUT, cwd=tmp,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the master did not start: {(tmp / 'master.log').read_text()}")
        time.sleep(0.1)
    return proc, json.loads(ready.read_text())


def main_thread(driver: Any) -> dict[str, float]:
    """The renderer's cumulative main-thread seconds (Chrome DevTools Performance
    metrics): all tasks, scripts, style recalculation and layout."""
    metrics = driver.execute_cdp_cmd("Performance.getMetrics", {})["metrics"]
    names = ("TaskDuration", "ScriptDuration", "RecalcStyleDuration", "LayoutDuration")
    return {m["name"]: float(m["value"]) for m in metrics if m["name"] in names}


def measure(driver: Any, url: str, workers: int, seconds: float, reload: bool) -> dict[str, Any]:
    if reload:
        driver.get(url)
    deadline = time.monotonic() + 60
    while driver.execute_script("return window.cloudaiDashboard?.workers() ?? 0") < workers:
        if time.monotonic() > deadline:
            raise SystemExit("the page never showed every worker")
        time.sleep(0.2)
    if driver.execute_script("return document.querySelector('[data-sort=cpu]').ariaSort") == "none":
        driver.execute_script("document.querySelector('[data-sort=cpu]').click()")  # descending
    driver.execute_script(COLLECT)
    redraws_before = driver.execute_script("return window.cloudaiDashboard.redrawCount()")
    messages = driver.execute_script("return window.cloudaiDashboard.messages()")
    driver.execute_cdp_cmd("Performance.enable", {})
    before = main_thread(driver)
    time.sleep(seconds)  # the browser collects while the heartbeats flow
    busy = {k: round((v - before[k]) / seconds, 3) for k, v in main_thread(driver).items()}
    frames = [float(f) for f in driver.execute_script("return window.__frames")[1:]]
    redraws = [float(r) for r in driver.execute_script(REDRAWS, redraws_before)]
    messages = driver.execute_script("return window.cloudaiDashboard.messages()") - messages
    long = driver.execute_script("return window.__long")
    dropped = sum(max(0, round(f / FRAME_MS) - 1) for f in frames)
    return {
        "frames": len(frames),
        "frame_ms_p50": round(percentile(frames, 50), 2),
        "frame_ms_p95": round(percentile(frames, 95), 2),
        "frame_ms_p99": round(percentile(frames, 99), 2),
        "frame_ms_max": round(max(frames), 2),
        "dropped_frames": dropped,
        "dropped_share": round(dropped / (len(frames) + dropped), 4),
        "redraw_ms_p50": round(percentile(redraws, 50), 2),
        "redraw_ms_p95": round(percentile(redraws, 95), 2),
        "redraw_ms_p99": round(percentile(redraws, 99), 2),
        "messages_per_s": round(messages / seconds, 1),
        "main_thread_busy_share": busy["TaskDuration"],
        "script_share": busy["ScriptDuration"],
        "style_layout_share": round(busy["RecalcStyleDuration"] + busy["LayoutDuration"], 3),
        "long_frames": len(long),
        "long_frames_ms": round(sum(d for d, _ in long)),
        "long_frames_work_ms": round(sum(w for _, w in long)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=1000)
    parser.add_argument(
        "--rates", default="200,0,1000", help="heartbeats/s in all, per run (0: none, a baseline)"
    )
    parser.add_argument("--seconds", type=float, default=20.0, help="measured, per run")
    parser.add_argument("--screenshot", type=Path, help="save the overview (PNG) here")
    args = parser.parse_args()
    reason = missing_browser()
    if reason:
        raise SystemExit(reason)
    tmp = Path(tempfile.mkdtemp(prefix="cloudai-dashboard-frames-"))
    master, ready = start_master(tmp, args.workers)
    driver = new_chromium(tmp / "chromium")
    url = f"http://127.0.0.1:{ready['http_port']}/"
    try:
        grpc, ws = f"127.0.0.1:{ready['grpc_port']}", f"{url.replace('http', 'ws')}ws/telemetry"
        for rate in (int(r) for r in args.rates.split(",")):
            # Rate 0 (after a run): the same page, the workers on it, nothing arriving.
            bench = rate and subprocess.Popen(
                [sys.executable, "-m", "cloudai", "bench", "--grpc", grpc, "--ws-url", ws,
                 "--master-pid", str(master.pid), "--workers", str(args.workers),
                 "--rate", str(rate), "--clients", "0", "--tasks", "1", "--generators", "1",
                 "--duration", str(args.seconds + 40), "--quiet"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp,
            )  # fmt: skip
            try:
                result = measure(driver, url, args.workers, args.seconds, reload=bool(bench))
                if args.screenshot and bench:
                    driver.save_screenshot(str(args.screenshot))
            finally:
                if bench:
                    bench.send_signal(signal.SIGINT)
                    try:
                        bench.wait(30)
                    except subprocess.TimeoutExpired:
                        bench.kill()
            print(json.dumps({"workers": args.workers, "rate": rate, **result}), flush=True)
    finally:
        driver.quit()
        master.send_signal(signal.SIGTERM)
        master.wait(30)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
