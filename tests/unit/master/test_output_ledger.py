"""The offset rules of AppendTaskOutput (output_ledger.RunLedger): pure, no I/O."""

from __future__ import annotations

import pytest

from cloudai.master.output_ledger import AppendPlan, RunLedger


def append(ledger: RunLedger, offset: int, length: int, final: bool = False) -> AppendPlan:
    plan = ledger.plan(offset, length, final)
    ledger.apply(plan)
    return plan


def test_in_order_chunks_are_stored_whole() -> None:
    ledger = RunLedger(cap=100)
    plan = append(ledger, 0, 10)
    assert (plan.accepted, plan.skip, plan.store, plan.write_at, plan.next_offset) == (
        True, 0, 10, 0, 10,
    )  # fmt: skip
    plan = append(ledger, 10, 5)
    assert (plan.store, plan.write_at, plan.next_offset) == (5, 10, 15)
    assert (ledger.held, ledger.accepted, ledger.final, ledger.truncated) == (15, 15, False, False)


def test_an_overlapping_resend_is_trimmed() -> None:
    ledger = RunLedger(cap=100)
    append(ledger, 0, 10)
    plan = append(ledger, 4, 10)  # bytes 4..13: 4..9 are held
    assert (plan.accepted, plan.skip, plan.store, plan.write_at) == (True, 6, 4, 10)
    assert ledger.held == ledger.accepted == 14


def test_a_chunk_wholly_held_changes_nothing() -> None:
    ledger = RunLedger(cap=100)
    append(ledger, 0, 10)
    plan = append(ledger, 2, 5)
    assert plan.accepted and not plan.changes
    assert plan.next_offset == 10 and ledger.held == 10


def test_a_gap_is_refused_with_what_is_held() -> None:
    ledger = RunLedger(cap=100)
    append(ledger, 0, 10)
    plan = append(ledger, 12, 5, final=True)
    assert not plan.accepted and plan.next_offset == 10
    assert (ledger.held, ledger.final) == (10, False)  # nothing of it counts


def test_bytes_past_the_cap_are_acknowledged_and_dropped() -> None:
    ledger = RunLedger(cap=8)
    plan = append(ledger, 0, 5)
    plan = append(ledger, 5, 6)
    assert (plan.store, plan.dropped, plan.next_offset) == (3, 3, 11)
    assert (ledger.held, ledger.accepted, ledger.truncated) == (8, 11, True)
    # Past the cap there is no gap: nothing is stored there anyway.
    plan = append(ledger, 40, 2, final=True)
    assert plan.accepted and plan.store == 0 and plan.final
    assert (ledger.held, ledger.accepted, ledger.final) == (8, 42, True)


def test_a_cap_of_zero_keeps_nothing() -> None:
    ledger = RunLedger(cap=0)
    plan = append(ledger, 0, 7, final=True)
    assert (plan.store, plan.dropped, ledger.held, ledger.final) == (0, 7, 0, True)


def test_final_ends_the_run_and_later_appends_change_nothing() -> None:
    ledger = RunLedger(cap=100)
    append(ledger, 0, 4)
    plan = append(ledger, 4, 0, final=True)  # an empty last chunk
    assert plan.accepted and plan.final and ledger.final and ledger.held == 4
    plan = append(ledger, 4, 3)
    assert plan.accepted and not plan.changes and ledger.held == 4
    plan = append(ledger, 0, 4, final=True)  # the final chunk again (its answer was lost)
    assert plan.accepted and plan.next_offset == 4


def test_a_resent_final_chunk_that_is_held_still_ends_the_run() -> None:
    ledger = RunLedger(cap=100)
    append(ledger, 0, 6)  # stored, but the worker never saw the answer
    plan = append(ledger, 0, 6, final=True)
    assert plan.accepted and plan.final and plan.store == 0 and ledger.final


def test_negative_values_are_refused() -> None:
    with pytest.raises(ValueError):
        RunLedger(cap=1).plan(-1, 1, False)
