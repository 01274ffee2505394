"""The state machine, checked for every state and every event against DESIGN.md's table."""

from __future__ import annotations

import itertools

import pytest

from service.states import IN_FLIGHT, TERMINAL, Event, State, sources, transition

Q, SG, U, SD, F = State.QUEUED, State.SUBMITTING, State.UNKNOWN, State.SUBMITTED, State.FETCHING
OK, FA, CA, EX = State.SUCCEEDED, State.FAILED, State.CANCELLED, State.EXPIRED

# Written out by hand from DESIGN.md, not derived from the implementation.
EXPECTED: dict[tuple[State, Event], State] = {
    (Q, Event.CLAIM): SG,
    (Q, Event.CANCEL): CA,
    (Q, Event.EXPIRE): EX,
    (SG, Event.CREATED): SD,
    (SG, Event.REJECTED): FA,
    (SG, Event.RETRY_LATER): Q,
    (SG, Event.AMBIGUOUS): U,
    (SG, Event.LEASE_EXPIRED): U,
    (SG, Event.CLAIM_LAPSED): Q,
    (SG, Event.PROGRESS): SD,
    (SG, Event.COMPLETED): F,
    (SG, Event.FAILED_RETRYABLE): Q,
    (SG, Event.FAILED_FINAL): FA,
    (SG, Event.ATTEMPTS_EXHAUSTED): FA,
    (SG, Event.CANCEL): CA,
    (SG, Event.EXPIRE): EX,
    (U, Event.PROGRESS): SD,
    (U, Event.COMPLETED): F,
    (U, Event.FAILED_RETRYABLE): Q,
    (U, Event.FAILED_FINAL): FA,
    (U, Event.ADOPTION_WINDOW_PASSED): Q,
    (U, Event.ATTEMPTS_EXHAUSTED): FA,
    (U, Event.CANCEL): CA,
    (U, Event.EXPIRE): EX,
    (SD, Event.COMPLETED): F,
    (SD, Event.FAILED_RETRYABLE): Q,
    (SD, Event.FAILED_FINAL): FA,
    (SD, Event.ATTEMPTS_EXHAUSTED): FA,
    (SD, Event.CANCEL): CA,
    (SD, Event.EXPIRE): EX,
    (F, Event.STORED): OK,
    (F, Event.OUTPUT_GONE): FA,
    (F, Event.EXPIRE): EX,
    (FA, Event.RETRY): Q,
}


@pytest.mark.parametrize(("state", "event"), list(itertools.product(State, Event)))
def test_every_state_and_event(state: State, event: Event) -> None:
    assert transition(state, event) == EXPECTED.get((state, event))


@pytest.mark.parametrize("state", sorted(TERMINAL))
def test_terminal_states_are_left_only_by_an_explicit_retry_of_a_failure(state: State) -> None:
    leaving = {e for e in Event if transition(state, e) is not None}
    assert leaving == ({Event.RETRY} if state is FA else set())


def test_no_snapshot_moves_a_fetching_job_backwards() -> None:
    for event in (Event.PROGRESS, Event.COMPLETED, Event.FAILED_RETRYABLE, Event.FAILED_FINAL):
        assert transition(F, event) is None


def test_sources_is_the_cas_guard() -> None:
    assert set(sources(Event.COMPLETED)) == {SG, U, SD}
    assert set(sources(Event.CLAIM)) == {Q}


def test_in_flight_states_count_against_the_upstream_cap() -> None:
    assert {SG, U, SD} == IN_FLIGHT
