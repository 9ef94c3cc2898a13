"""Where does a task go when the admin says "any worker"? Pure: the caller passes what it
knows of each worker.

A worker fits when it is active and its free CPU, memory and GPUs cover the request.
Free is the smaller of what is not reserved (its totals minus what the tasks the master
gave it asked for) and what is not in use (its totals times the share its last heartbeat
reports idle), so that neither a full reservation nor a busy machine takes more work.
Among the workers that fit, the least loaded wins: the lowest CPU use, then the fewest
tasks, then the id (so that the choice is deterministic).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Request:
    cpu: float = 0.0  # cores
    memory: float = 0.0  # GiB
    gpu: float = 0.0


@dataclass(frozen=True, slots=True)
class Candidate:
    worker_id: str
    active: bool
    total_cpu: float
    total_memory: float
    total_gpu: float
    cpu_usage: float  # percent of the whole machine
    memory_usage: float  # percent
    gpu_usage: float  # percent
    reserved: Request  # what the tasks the master assigned to it (still running) asked for
    tasks: int  # those tasks


def free(candidate: Candidate) -> Request:
    """What ``candidate`` can still take (see the module's docstring)."""

    def idle(total: float, usage: float) -> float:
        return total * max(0.0, 100.0 - usage) / 100.0

    reserved = candidate.reserved
    return Request(
        cpu=min(candidate.total_cpu - reserved.cpu, idle(candidate.total_cpu, candidate.cpu_usage)),
        memory=min(
            candidate.total_memory - reserved.memory,
            idle(candidate.total_memory, candidate.memory_usage),
        ),
        gpu=min(candidate.total_gpu - reserved.gpu, idle(candidate.total_gpu, candidate.gpu_usage)),
    )


def fits(candidate: Candidate, request: Request) -> bool:
    if not candidate.active:
        return False
    room = free(candidate)
    return room.cpu >= request.cpu and room.memory >= request.memory and room.gpu >= request.gpu


def choose(candidates: list[Candidate], request: Request) -> Candidate | None:
    """The least-loaded active worker that fits ``request``; None if none does."""
    fitting = [c for c in candidates if fits(c, request)]
    if not fitting:
        return None
    return min(fitting, key=lambda c: (c.cpu_usage, c.tasks, c.worker_id))


def choose_avoiding(
    candidates: list[Candidate], request: Request, avoid: frozenset[str]
) -> Candidate | None:
    """``choose``, among the workers not in ``avoid`` first (a retry goes elsewhere than
    the runs that failed when it can), then among all."""
    elsewhere = choose([c for c in candidates if c.worker_id not in avoid], request)
    return elsewhere if elsewhere is not None else choose(candidates, request)


def no_fit_reason(candidates: list[Candidate], request: Request) -> str:
    """One line for a person when ``choose`` found nothing."""
    active = [c for c in candidates if c.active]
    if not active:
        return "no worker is active"
    wanted = f"{request.cpu:g} CPU, {request.memory:g} GiB memory, {request.gpu:g} GPU"
    return f"no active worker has {wanted} free ({len(active)} active)"
