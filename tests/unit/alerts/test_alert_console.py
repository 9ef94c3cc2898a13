"""The console's `alerts` command, on an AlertService without a store."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

from cloudai.alerts.manager import AlertService
from cloudai.master.alerts_admin import AlertsAdmin
from cloudai.master.cluster_admin import ClusterAdmin
from cloudai.master.console import ConsoleCommands
from cloudai.telemetry.manager import TelemetryEvent
from cloudai.telemetry.model import WorkerTelemetry


async def test_alerts_command(tmp_path: Path) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text('[[rule]]\nname = "high-cpu"\nmetric = "cpu_usage"\nthreshold = 90\n')
    service = AlertService(None, rules_file=rules, webhook_senders=[])
    await service.load()
    service.on_telemetry(WorkerTelemetry("w1", cpu_usage=97), TelemetryEvent.UPDATE)
    console = ConsoleCommands(cast(ClusterAdmin, cast(Any, None)), alerts=AlertsAdmin(service))
    text = (await console.execute("alerts")).text(width=120)
    assert "high-cpu" in text and "w1" in text and "firing" in text
    assert "cpu_usage > 90" in (await console.execute("alerts rules")).text(width=120)
    assert "no silences" in (await console.execute("alerts silences")).text()
    assert "no alerts" in (await console.execute("alerts pending")).text()
    assert "no alert history" in (await console.execute("alerts history")).text()
    bad = await console.execute("alerts sideways")
    assert bad.error and "unknown alerts view" in bad.text()
    off = await ConsoleCommands(cast(ClusterAdmin, cast(Any, None))).execute("alerts")
    assert off.error
