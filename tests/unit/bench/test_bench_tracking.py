from __future__ import annotations

import orjson

from cloudai.bench.schedule import Layout, tag_to_cpu
from cloudai.bench.shared import ACCEPTED
from cloudai.bench.tracking import Tracker, count_workers, worker_states
from cloudai.telemetry.encoding import encode_fragment, join_fragments
from cloudai.telemetry.model import TaskTelemetry, WorkerTelemetry


def frame_of(*states: tuple[str, float]) -> bytes:
    return join_fragments(
        encode_fragment(
            WorkerTelemetry(
                worker_id,
                cpu_usage=cpu,
                running_tasks=[TaskTelemetry("t1", cpu_usage=99.0)],
                is_active=True,
            )
        )
        for worker_id, cpu in states
    )


def test_worker_states_from_the_masters_frames() -> None:
    frame = frame_of(("w1", 1.5), ("w2", tag_to_cpu(12345)))
    assert count_workers(frame) == 2
    states = worker_states(frame)
    assert [(w, float(c)) for w, c in states] == [(b"w1", 1.5), (b"w2", tag_to_cpu(12345))]


def test_worker_states_falls_back_to_json_for_other_layouts() -> None:
    # Another master may order keys differently or add spaces.
    frame = orjson.dumps({"w1": {"cpu_usage": 2.5, "worker_id": "w1"}, "w2": {"worker_id": "w2"}})
    assert [(w, float(c)) for w, c in worker_states(frame)] == [(b"w1", 2.5), (b"w2", 0.0)]
    assert worker_states(b"{}") == []
    assert worker_states(b"not json") == []


def make_tracker(workers: int = 2, capacity: int = 64) -> tuple[Tracker, list[float]]:
    send_times = [0.0] * capacity
    index_of = {f"w{i}".encode(): i for i in range(workers)}
    return Tracker(index_of, send_times, capacity), send_times


def test_tracker_records_latency_and_latest_state_only_when_active() -> None:
    tracker, send_times = make_tracker()
    send_times[5] = 100.0
    send_times[6] = 100.5
    tracker.on_frame(frame_of(("w0", tag_to_cpu(5))), received_at=100.002)
    assert tracker.last == [5, 0]
    assert tracker.latency.count == 0 and not tracker.seen[5]  # snapshot phase
    tracker.active = True
    tracker.on_frame(frame_of(("w1", tag_to_cpu(6)), ("other", 3.0)), received_at=100.504)
    assert tracker.last == [5, 6]
    assert tracker.seen[6] and tracker.fragments == 1 and tracker.foreign == 1
    assert abs(tracker.latency.maximum - 4.0) < 1e-6


def test_untagged_and_unsent_states_are_not_counted() -> None:
    tracker, _send_times = make_tracker()
    tracker.active = True
    tracker.on_frame(frame_of(("w0", 0.0), ("w1", tag_to_cpu(7))), received_at=1.0)
    assert tracker.fragments == 0 and tracker.last == [0, 0]


def test_gaps_split_missed_from_coalesced() -> None:
    layout = Layout(workers=1, generators=1)  # tags 1, 2, 3, ... all of worker 0
    tracker, send_times = make_tracker(workers=1)
    states = [0] * 64
    for tag, sent_at in ((1, 0.0), (2, 0.100), (3, 0.102), (4, 0.300)):
        send_times[tag] = sent_at + 1.0
        states[tag] = ACCEPTED
    tracker.seen[1] = tracker.seen[3] = 1
    # tag 2: followed by tag 3 within the window -> coalesced; tag 4: never replaced -> missed
    missed, coalesced = tracker.gaps(layout, [1, 2, 3, 4], states, window=0.006)
    assert (missed, coalesced) == (1, 1)


def test_stale_compares_the_last_state_with_the_last_accepted() -> None:
    tracker, _ = make_tracker(workers=3)
    tracker.last = [5, 9, 0]
    assert tracker.stale([5, 9, 0]) == 0
    assert tracker.stale([5, 11, 0]) == 1  # an older state of w1 is what it shows
    assert tracker.stale([5, 9, 3]) == 1  # never received w2's heartbeat
    assert tracker.stale([4, 9, 0]) == 0  # newer than accepted: the call failed, not stale
