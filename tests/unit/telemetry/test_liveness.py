"""The liveness state machine (pure): the whole table, the tick rules (suspect, inactive,
stall, start-up grace, all silent at once), the stall meter and the WebSocket keepalive.
No sockets, no event loop, no sleeps: every time is passed in."""

from __future__ import annotations

import itertools

import pytest

from cloudai.telemetry.liveness import (
    ALIVE,
    NOT_SEEN,
    TRANSITIONS,
    ClientKeepalive,
    Connectivity,
    KeepaliveAction,
    Liveness,
    LivenessEvent,
    LivenessPolicy,
    LivenessState,
    StallMeter,
    Transition,
    next_state,
)

S, E = LivenessState, LivenessEvent

# The table, written out independently of the module: every (state, event) pair.
# None: the event changes nothing in that state.
EXPECTED: dict[LivenessState, dict[LivenessEvent, LivenessState | None]] = {
    S.REMOVED: {
        E.KNOWN: S.UNKNOWN,
        E.AUTHORISED: S.AUTHORISED,
        E.REGISTERED: S.REGISTERED,
        E.HEARTBEAT: S.ACTIVE,
        E.SILENT: None,
        E.TIMED_OUT: None,
        E.REMOVED: None,
    },
    S.UNKNOWN: {
        E.KNOWN: None,
        E.AUTHORISED: None,
        E.REGISTERED: S.REGISTERED,
        E.HEARTBEAT: S.ACTIVE,
        E.SILENT: None,
        E.TIMED_OUT: None,
        E.REMOVED: S.REMOVED,
    },
    S.AUTHORISED: {
        E.KNOWN: None,
        E.AUTHORISED: None,
        E.REGISTERED: S.REGISTERED,
        E.HEARTBEAT: S.ACTIVE,
        E.SILENT: None,
        E.TIMED_OUT: None,
        E.REMOVED: S.REMOVED,
    },
    S.REGISTERED: {
        E.KNOWN: None,
        E.AUTHORISED: None,
        E.REGISTERED: None,
        E.HEARTBEAT: S.ACTIVE,
        E.SILENT: S.SUSPECT,
        E.TIMED_OUT: S.INACTIVE,
        E.REMOVED: S.REMOVED,
    },
    S.ACTIVE: {
        E.KNOWN: None,
        E.AUTHORISED: None,
        E.REGISTERED: None,
        E.HEARTBEAT: None,
        E.SILENT: S.SUSPECT,
        E.TIMED_OUT: S.INACTIVE,
        E.REMOVED: S.REMOVED,
    },
    S.SUSPECT: {
        E.KNOWN: None,
        E.AUTHORISED: None,
        E.REGISTERED: S.ACTIVE,
        E.HEARTBEAT: S.ACTIVE,
        E.SILENT: None,
        E.TIMED_OUT: S.INACTIVE,
        E.REMOVED: S.REMOVED,
    },
    S.INACTIVE: {
        E.KNOWN: None,
        E.AUTHORISED: None,
        E.REGISTERED: S.REGISTERED,
        E.HEARTBEAT: S.ACTIVE,
        E.SILENT: None,
        E.TIMED_OUT: None,
        E.REMOVED: S.REMOVED,
    },
}

ALL_PAIRS = list(itertools.product(LivenessState, LivenessEvent))


def test_the_expected_table_covers_every_pair() -> None:
    assert set(EXPECTED) == set(LivenessState)
    assert all(set(row) == set(LivenessEvent) for row in EXPECTED.values())


@pytest.mark.parametrize(("state", "event"), ALL_PAIRS, ids=lambda v: str(v))
def test_next_state_follows_the_table(state: LivenessState, event: LivenessEvent) -> None:
    expected = EXPECTED[state][event]
    assert next_state(state, event) is (state if expected is None else expected)
    assert ((state, event) in TRANSITIONS) is (expected is not None)


def test_the_table_lists_no_self_transition() -> None:
    assert all(old is not new for (old, _), new in TRANSITIONS.items())


def test_alive_is_exactly_the_is_active_states() -> None:
    assert {S.REGISTERED, S.ACTIVE, S.SUSPECT} == ALIVE
    assert {S.UNKNOWN, S.AUTHORISED} == NOT_SEEN
    assert Transition("w", S.ACTIVE, S.SUSPECT, E.SILENT).is_active
    assert not Transition("w", S.SUSPECT, S.INACTIVE, E.TIMED_OUT).is_active


def test_every_state_is_reachable_from_nothing() -> None:
    reached = {S.REMOVED}
    frontier = [S.REMOVED]
    while frontier:
        state = frontier.pop()
        for event in LivenessEvent:
            new = next_state(state, event)
            if new not in reached:
                reached.add(new)
                frontier.append(new)
    assert reached == set(LivenessState)


# -- records and events -----------------------------------------------------------------

POLICY = LivenessPolicy.for_timeout(30.0)


def test_policy_for_timeout() -> None:
    assert POLICY.check_interval == 1.0
    assert POLICY.suspect_after == 15.0
    assert POLICY.stall_threshold == 7.5
    assert POLICY.hold == 7.5
    assert POLICY.credit_floor == 0.5
    short = LivenessPolicy.for_timeout(2.0)
    assert (short.check_interval, short.hold) == (0.5, 0.5)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"timeout": 0},
        {"check_interval": 0},
        {"check_interval": 31},
        {"suspect_after": 0},
        {"stall_threshold": 0},
        {"hold": -1},
        {"credit_floor": -1},
        {"all_silent_min": 0},
    ],
)
def test_policy_validation(kwargs: dict[str, float]) -> None:
    values = {
        "timeout": 30.0,
        "check_interval": 1.0,
        "suspect_after": 15.0,
        "stall_threshold": 7.5,
        "hold": 7.5,
        "credit_floor": 0.5,
        **kwargs,
    }
    with pytest.raises(ValueError):
        LivenessPolicy(**values)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        LivenessPolicy.for_timeout(0)


@pytest.mark.parametrize(("state", "event"), ALL_PAIRS, ids=lambda v: str(v))
def test_apply_follows_the_table(state: LivenessState, event: LivenessEvent) -> None:
    live = Liveness(POLICY, 0.0)
    path = {
        S.REMOVED: [],
        S.UNKNOWN: [E.KNOWN],
        S.AUTHORISED: [E.AUTHORISED],
        S.REGISTERED: [E.REGISTERED],
        S.ACTIVE: [E.HEARTBEAT],
        S.SUSPECT: [E.HEARTBEAT, E.SILENT],
        S.INACTIVE: [E.HEARTBEAT, E.TIMED_OUT],
    }[state]
    for step in path:
        live.apply("w", step, 1.0)
    assert live.state("w") is state
    transition = live.apply("w", event, 2.0)
    expected = EXPECTED[state][event]
    if expected is None:
        assert transition is None
        assert live.state("w") is state
    else:
        assert transition == Transition("w", state, expected, event)
        assert live.state("w") is expected
    assert ("w" in live) is (live.state("w") is not S.REMOVED)


def test_signs_of_life_stamp_last_seen_never_backwards() -> None:
    live = Liveness(POLICY, 0.0)
    live.registered("w", 10.0)
    record = live.get("w")
    assert record is not None and record.last_seen == 10.0
    live.heartbeat("w", 12.0)
    assert record.last_seen == 12.0
    live.heartbeat("w", 11.0)  # an older stamp does not move it back
    assert record.last_seen == 12.0
    live.known("w", 50.0)  # not a sign of life
    assert record.last_seen == 12.0
    assert repr(record) == "WorkerLiveness('w', active, 12.0)"


def test_counts_and_iteration() -> None:
    live = Liveness(POLICY, 0.0)
    live.known("u1", 0.0)
    live.known("u2", 0.0)
    live.registered("r", 0.0)
    live.heartbeat("a", 0.0)
    assert live.counts() == {S.UNKNOWN: 2, S.REGISTERED: 1, S.ACTIVE: 1}
    assert sorted(r.worker_id for r in live) == ["a", "r", "u1", "u2"]
    assert len(live) == 4
    live.removed("u1")
    assert len(live) == 3 and live.state("u1") is S.REMOVED


# -- ticks ------------------------------------------------------------------------------


def started(n: int = 1, at: float = 0.0, policy: LivenessPolicy = POLICY) -> Liveness:
    """A master started at ``at`` - policy.timeout (grace over) with ``n`` active workers
    last heard at ``at``."""
    live = Liveness(policy, at - policy.timeout)
    for i in range(n):
        live.heartbeat(f"w{i}", at)
    return live


def states(live: Liveness) -> dict[str, LivenessState]:
    return {r.worker_id: r.state for r in live}


def test_silence_makes_suspect_then_inactive() -> None:
    live = started()
    assert live.tick(14.9).transitions == ()
    result = live.tick(15.0)
    assert result.transitions == (Transition("w0", S.ACTIVE, S.SUSPECT, E.SILENT),)
    assert live.tick(29.9).transitions == ()  # suspect stays suspect
    result = live.tick(30.0)
    assert result.transitions == (Transition("w0", S.SUSPECT, S.INACTIVE, E.TIMED_OUT),)
    assert live.tick(100.0).transitions == ()  # published once
    live.heartbeat("w0", 101.0)
    assert live.state("w0") is S.ACTIVE


def test_a_late_tick_goes_straight_to_inactive() -> None:
    live = started()
    result = live.tick(31.0)
    assert result.transitions == (Transition("w0", S.ACTIVE, S.INACTIVE, E.TIMED_OUT),)


def test_registered_without_heartbeat_is_judged_too() -> None:
    live = Liveness(POLICY, -100.0)
    live.registered("w", 0.0)
    assert [t.new for t in live.tick(16.0).transitions] == [S.SUSPECT]
    assert [t.new for t in live.tick(31.0).transitions] == [S.INACTIVE]


def test_not_seen_workers_are_never_judged() -> None:
    live = Liveness(POLICY, 0.0)
    live.known("u", 0.0)
    live.authorised("a", 0.0)
    assert live.tick(1000.0).transitions == ()
    assert states(live) == {"u": S.UNKNOWN, "a": S.AUTHORISED}


def test_start_up_grace() -> None:
    live = Liveness(POLICY, 0.0)
    live.start(100.0)  # the master starts at 100
    live.heartbeat("w", 0.0)  # e.g. a stamp from before the start
    assert live.tick(114.9).transitions == ()  # silence counts from the start at most
    assert [t.new for t in live.tick(129.9).transitions] == [S.SUSPECT]
    assert [t.new for t in live.tick(130.0).transitions] == [S.INACTIVE]


def test_the_grace_does_not_delay_suspect_of_workers_seen_later() -> None:
    live = Liveness(POLICY, 0.0)
    live.heartbeat("w", 5.0)
    assert [t.new for t in live.tick(20.0).transitions] == [S.SUSPECT]
    assert [t.new for t in live.tick(35.0).transitions] == [S.INACTIVE]


def test_a_master_stall_holds_judgement_and_credits_the_stall() -> None:
    live = started(n=2, at=100.0)
    # The checker, due at 101, fires at 161: the master was stopped for 60 s.
    result = live.tick(161.0, lateness=60.0)
    assert result.stalled and result.held and result.transitions == ()
    assert live.stalls == 1 and live.stalled_seconds == 60.0
    # Credited: 100 + 60 = 160 is the silence's start now.
    assert {r.last_seen for r in live} == {160.0}
    # Held for `hold` (7.5 s): a tick within it judges nobody...
    assert live.tick(162.0).held
    # ...and a heartbeat received during the hold is what counts afterwards.
    live.heartbeat("w0", 163.0)
    result = live.tick(169.0)
    assert not result.held and result.transitions == ()
    assert [t.worker_id for t in live.tick(175.0).transitions] == ["w1"]  # 15 s: suspect
    result = live.tick(190.0)  # w1 silent for 30 s, w0 for 27 s
    assert {t.worker_id: t.new for t in result.transitions} == {"w0": S.SUSPECT, "w1": S.INACTIVE}


def test_small_lateness_is_credited_but_is_no_stall() -> None:
    live = started(at=100.0)
    result = live.tick(102.0, lateness=1.0)
    assert not result.stalled and not result.held
    assert live.get("w0").last_seen == 101.0  # type: ignore[union-attr]
    live.tick(103.0, lateness=0.2)  # below the floor: not credited
    assert live.get("w0").last_seen == 101.0  # type: ignore[union-attr]
    assert live.stalled_seconds == 1.0 and live.stalls == 0


def test_credit_never_moves_a_stamp_past_now() -> None:
    live = started(at=100.0)
    live.heartbeat("w0", 160.5)  # received at resume, before the late tick
    live.tick(161.0, lateness=60.0)
    assert live.get("w0").last_seen == 161.0  # type: ignore[union-attr]


def test_all_silent_at_once_is_one_connectivity_event() -> None:
    live = started(n=5, at=100.0)
    for i in range(5):
        live.heartbeat(f"w{i}", 100.0 + i * 0.2)  # different phases
    result = live.tick(130.0)  # w0 times out; the others are suspect
    assert result.connectivity_lost and result.held and result.silent_workers == 5
    assert {t.new for t in result.transitions} == {S.SUSPECT}
    assert live.connectivity is Connectivity.LOST and live.connectivity_events == 1
    assert set(states(live).values()) == {S.SUSPECT}
    # Still held a tick later; the event is not raised again.
    result = live.tick(131.0)
    assert result.held and not result.connectivity_lost and result.transitions == ()
    # After the hold (7.5 s), still silent: inactive, all of them.
    result = live.tick(138.0)
    assert not result.held and {t.new for t in result.transitions} == {S.INACTIVE}
    assert len(result.transitions) == 5 and live.connectivity_events == 1
    live.heartbeat("w3", 140.0)
    assert live.connectivity is Connectivity.OK


def test_all_silent_recovers_within_the_hold() -> None:
    live = started(n=3, at=100.0)
    assert live.tick(130.0).connectivity_lost
    for i in range(3):
        live.heartbeat(f"w{i}", 133.0)
    assert live.connectivity is Connectivity.OK
    assert live.tick(138.0).transitions == ()
    assert set(states(live).values()) == {S.ACTIVE}


def test_one_of_many_silent_is_an_ordinary_death() -> None:
    live = started(n=4, at=100.0)
    for i in range(1, 4):
        live.heartbeat(f"w{i}", 125.0)
    result = live.tick(130.0)
    assert not result.connectivity_lost and not result.held
    assert result.transitions == (Transition("w0", S.ACTIVE, S.INACTIVE, E.TIMED_OUT),)


def test_all_silent_needs_at_least_all_silent_min_workers() -> None:
    live = started(n=2, at=100.0)
    result = live.tick(130.0)
    assert not result.connectivity_lost
    assert {t.new for t in result.transitions} == {S.INACTIVE}
    assert live.connectivity is Connectivity.OK


def test_a_registration_also_ends_a_connectivity_episode() -> None:
    live = started(n=3, at=100.0)
    live.tick(130.0)
    live.registered("w1", 131.0)
    assert live.connectivity is Connectivity.OK and live.state("w1") is S.ACTIVE


# -- the stall meter ----------------------------------------------------------------------


def test_stall_meter_counts_lateness_above_the_threshold() -> None:
    meter = StallMeter(0.25)
    assert meter.fired(5.0) == 0.0  # nothing expected
    meter.expect(1.0)
    assert meter.fired(1.1) == pytest.approx(0.1)
    assert meter.stalled == 0.0 and meter.stalls == 0
    meter.expect(2.0)
    assert meter.fired(42.0) == 40.0
    assert meter.stalled == 40.0 and meter.stalls == 1
    assert meter.running(50.0) == 10.0
    with pytest.raises(ValueError):
        StallMeter(-1)


def test_stall_meter_sees_a_stall_in_progress_before_the_probe_runs() -> None:
    meter = StallMeter(0.25)
    meter.expect(10.0)
    assert meter.running(10.2) == 10.2  # not overdue beyond the threshold
    assert meter.running(70.0) == 10.0  # the probe is 60 s overdue: the clock stood still
    meter.fired(70.0)
    assert meter.running(70.0) == 10.0  # the same once the probe has reported it
    assert meter.pending(70.0) == 0.0


# -- the WebSocket keepalive ------------------------------------------------------------


def test_keepalive_pings_then_drops_an_unanswering_client() -> None:
    keep = ClientKeepalive(ping_interval=54.0, client_timeout=60.0, now=0.0)
    assert keep.due() == 54.0
    assert keep.poll(53.9) is KeepaliveAction.WAIT
    assert keep.poll(54.0) is KeepaliveAction.PING
    assert keep.due() == 60.0
    assert keep.poll(59.0) is KeepaliveAction.WAIT
    assert keep.poll(60.0) is KeepaliveAction.DROP


def test_keepalive_answer_resets() -> None:
    keep = ClientKeepalive(54.0, 60.0, 0.0)
    assert keep.poll(54.0) is KeepaliveAction.PING
    keep.heard(54.5)
    assert keep.ping_sent is None and keep.poll(60.0) is KeepaliveAction.WAIT
    assert keep.poll(108.5) is KeepaliveAction.PING


def test_keepalive_never_drops_without_a_ping_sent_after_the_silence() -> None:
    # The running clock jumped (a stall it did not measure): the client is pinged first
    # and gets at least pong_wait to answer.
    keep = ClientKeepalive(54.0, 60.0, 0.0)
    assert keep.poll(500.0) is KeepaliveAction.PING
    assert keep.poll(500.5) is KeepaliveAction.WAIT
    assert keep.poll(506.0) is KeepaliveAction.DROP


def test_keepalive_with_a_ping_interval_above_the_timeout() -> None:
    keep = ClientKeepalive(100.0, 10.0, 0.0)
    assert keep.ping_after == 10.0 and keep.pong_wait == 1.0
    assert keep.poll(10.0) is KeepaliveAction.PING
    assert keep.poll(10.5) is KeepaliveAction.WAIT
    assert keep.poll(11.0) is KeepaliveAction.DROP
    with pytest.raises(ValueError):
        ClientKeepalive(0, 1, 0)
