"""The console's worker detail shows the richer telemetry a worker sent, and nothing more
for a worker that sent none."""

from __future__ import annotations

from cloudai import views

NOW = 1_000_000.0
GIB = 1 << 30


def worker(**fields: object) -> dict[str, object]:
    base: dict[str, object] = {
        "worker_id": "w1",
        "address": "10.0.0.7:50052",
        "registered": True,
        "total_cpu": 8,
        "total_memory": 16,
        "total_storage": 100,
        "total_gpu": 1,
        "is_active": True,
        "cpu_usage": 10.0,
        "memory_usage": 25.0,
        "storage_usage": 5.0,
        "gpu_usage": 50.0,
        "running_tasks": [],
        "last_update": NOW - 3,
    }
    base.update(fields)
    return base


def test_go_worker_detail_has_no_new_lines() -> None:
    assert views.measured_rows(worker()) == []
    nulls = worker(net_rx_bytes_per_sec=None, load_avg=None, gpus=[])
    assert views.measured_rows(nulls) == []
    text = views.render_text(views.worker_detail(nulls, NOW), width=120)
    assert "Network" not in text and "Load" not in text and "GPU 0" not in text


def test_detail_shows_network_disk_load_and_each_gpu() -> None:
    rich = worker(
        net_rx_bytes_per_sec=1536.0,
        net_tx_bytes_per_sec=0.0,
        disk_read_bytes_per_sec=3 * 1024 * 1024,
        disk_write_bytes_per_sec=None,
        load_avg=[0.5, 0.25, None],
        gpus=[
            {
                "index": 0,
                "name": "NVIDIA H100",
                "uuid": "GPU-1",
                "utilization": 37.0,
                "memory_used_bytes": GIB,
                "memory_total_bytes": 80 * GIB,
                "temperature_c": 41.0,
                "power_watts": 120.5,
            },
            {"index": 1, "name": "", "utilization": 0.0, "memory_used_bytes": 0},
        ],
    )
    text = views.render_text(views.worker_detail(rich, NOW), width=120)
    assert "in 1.5 KiB/s, out 0 B/s" in text
    assert "read 3.0 MiB/s, write -" in text
    assert "0.50 0.25 - (1, 5, 15 min)" in text
    assert "NVIDIA H100: 37.0%, 1.0 GiB of 80.0 GiB, 41 °C, 120 W" in text
    assert "GPU 1" in text and "0.0%, 0 B of -" in text


def test_figures_of_a_worker_not_heard_from_are_not_shown() -> None:
    assert views.measured_rows(worker(last_update=None, load_avg=[1.0, 1.0, 1.0])) == []


def test_format_rate() -> None:
    assert views.format_rate(512) == "512 B/s"
    assert views.format_rate(None) == "-"
