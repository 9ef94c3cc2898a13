"""scripts/bench_ws_fanout.py, the hub's in-process fan-out micro-benchmark, runs and
counts what it should (no timings)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[3] / "scripts" / "bench_ws_fanout.py"
_SPEC = importlib.util.spec_from_file_location("bench_ws_fanout", _PATH)
assert _SPEC is not None and _SPEC.loader is not None
_MODULE = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(_MODULE)
scenario = _MODULE.scenario


@pytest.mark.parametrize("deflate", [False, True])
@pytest.mark.parametrize("subscriptions", [0, 1, 3])
async def test_one_encode_per_subscription_per_tick(subscriptions: int, deflate: bool) -> None:
    result = await scenario(
        clients=12, workers=40, per_tick=5, ticks=6, subscriptions=subscriptions, deflate=deflate
    )
    assert result["frames_encoded_per_tick"] == max(1, subscriptions)
    assert result["compressions_per_tick"] == (max(1, subscriptions) if deflate else 0)
    assert result["direct_sends"] == 12 * 6
    assert result["hub_cpu_us_per_tick"] > 0 and result["bytes_per_client_per_tick"] > 0
