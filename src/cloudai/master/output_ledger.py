"""What the master holds of one task run's output, and what an AppendTaskOutput does to it.

Pure (no I/O, no clock): the disk store (``task_output.py``) asks ``RunLedger.plan`` what
to write, writes it, then ``apply``s the plan. The rules:

- Offsets count bytes of the run's whole output (stdout and stderr, merged) from 0.
- ``held``: bytes stored, always the first ``held`` bytes of the output, never more
  than ``cap``. ``accepted``: bytes accounted for; it passes ``held`` only once the cap
  is reached (bytes beyond it are acknowledged and dropped: the master keeps the FIRST
  ``cap`` bytes; the last ones are in the result's logs).
- A chunk that overlaps what is held is trimmed (a resend after a lost answer is
  harmless); one wholly held changes nothing. Either way the answer's ``next_offset``
  is ``accepted``.
- A chunk that starts past ``accepted`` (a gap) is refused, nothing stored, with
  ``next_offset = accepted``: the worker resends from there. Past the cap there are no
  gaps: nothing is stored there anyway.
- ``final``: nothing follows this chunk. Once a run is final, appends change nothing.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class AppendPlan:
    """What to do with one chunk: write ``data[skip:skip + store]`` at ``write_at``."""

    accepted: bool  # False: a gap, refused (nothing stored)
    skip: int = 0  # leading bytes already held (trimmed)
    store: int = 0  # bytes to write after those
    write_at: int = 0  # file offset of the write (the bytes held so far)
    next_offset: int = 0  # what the master accounts for once this is applied
    final: bool = False  # the run's output is complete once this is applied
    dropped: int = 0  # bytes of this chunk beyond the cap (acknowledged, not kept)

    @property
    def changes(self) -> bool:
        return self.store > 0 or self.final or self.dropped > 0


@dataclass(slots=True)
class RunLedger:
    cap: int  # bytes kept at most
    held: int = 0
    accepted: int = 0
    final: bool = False

    @property
    def truncated(self) -> bool:
        """Bytes beyond the cap were dropped."""
        return self.accepted > self.held

    def plan(self, offset: int, length: int, final: bool) -> AppendPlan:
        if offset < 0 or length < 0:
            raise ValueError("offset and length must be >= 0")
        end = offset + length
        if self.final or (end <= self.accepted and not final):
            return AppendPlan(True, skip=length, write_at=self.held, next_offset=self.accepted)
        capped = self.held >= self.cap
        if offset > self.accepted and not capped:
            return AppendPlan(False, write_at=self.held, next_offset=self.accepted)
        skip = min(length, max(0, self.accepted - offset))
        new = length - skip
        store = 0 if capped else min(new, self.cap - self.held)
        return AppendPlan(
            True,
            skip=skip,
            store=store,
            write_at=self.held,
            next_offset=max(self.accepted, end),
            final=final,
            dropped=new - store,
        )

    def apply(self, plan: AppendPlan) -> None:
        if not plan.accepted:
            return
        self.held += plan.store
        self.accepted = max(self.accepted, plan.next_offset)
        self.final = self.final or plan.final
