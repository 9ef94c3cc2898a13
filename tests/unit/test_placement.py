from __future__ import annotations

from cloudai.placement import (
    Candidate,
    Request,
    choose,
    choose_avoiding,
    fits,
    free,
    no_fit_reason,
)

NOTHING = Request()


def worker(
    worker_id: str,
    *,
    cpu: float = 0.0,
    mem: float = 0.0,
    active: bool = True,
    reserved: Request = NOTHING,
    tasks: int = 0,
    total_cpu: float = 8,
    total_memory: float = 16,
    total_gpu: float = 0,
) -> Candidate:
    return Candidate(
        worker_id, active, total_cpu, total_memory, total_gpu, cpu, mem, 0.0, reserved, tasks
    )


def test_free_is_the_smaller_of_unreserved_and_idle() -> None:
    room = free(worker("a", cpu=50.0, mem=25.0, reserved=Request(cpu=6, memory=2)))
    assert (room.cpu, room.memory, room.gpu) == (2.0, 12.0, 0.0)


def test_the_least_loaded_fitting_worker_wins() -> None:
    workers = [
        worker("busy", cpu=90.0),
        worker("idle-but-reserved", cpu=1.0, reserved=Request(cpu=7.5)),
        worker("b", cpu=20.0, tasks=2),
        worker("a", cpu=20.0, tasks=1),
        worker("down", cpu=0.0, active=False),
    ]
    chosen = choose(workers, Request(cpu=2, memory=4))
    assert chosen is not None and chosen.worker_id == "a"
    gpu = choose([*workers, worker("gpu", cpu=50.0, total_gpu=2)], Request(gpu=1))
    assert gpu is not None and gpu.worker_id == "gpu"


def test_nothing_fits() -> None:
    assert choose([], Request()) is None
    assert no_fit_reason([], Request()) == "no worker is active"
    small = [worker("a", total_cpu=2)]
    assert not fits(small[0], Request(cpu=4))
    assert choose(small, Request(cpu=4)) is None
    assert no_fit_reason(small, Request(cpu=4)) == (
        "no active worker has 4 CPU, 0 GiB memory, 0 GPU free (1 active)"
    )


def test_a_retry_goes_elsewhere_when_something_else_fits() -> None:
    workers = [worker("a", cpu=5.0), worker("b", cpu=60.0), worker("c", cpu=1.0, active=False)]
    again = choose_avoiding(workers, Request(cpu=1), frozenset({"a"}))
    assert again is not None and again.worker_id == "b"
    # only the worker that was tried fits: it gets the retry
    only = choose_avoiding(workers, Request(cpu=4), frozenset({"a"}))
    assert only is not None and only.worker_id == "a"
    assert choose_avoiding(workers, Request(cpu=100), frozenset()) is None
