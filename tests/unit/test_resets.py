"""Each event declares the job columns it resets, and a `Change` carries them under what its
caller sets: no caller spells out lease clearing, and none can forget it."""

from __future__ import annotations

from service.jobs import MUTABLE_COLUMNS, RESETS, Change
from service.states import TERMINAL, TRANSITIONS, Event


def test_every_event_declares_what_it_resets_in_mutable_columns() -> None:
    assert set(RESETS) == set(Event)
    assert all(set(cols) <= set(MUTABLE_COLUMNS) for cols in RESETS.values())


def test_every_event_into_an_end_state_ends_the_lease_and_the_poll_schedule() -> None:
    for (_state, event), to_state in TRANSITIONS.items():
        if to_state in TERMINAL:
            resets = Change(event, "test").set
            assert resets["lease_owner"] is None and resets["lease_until"] is None, event
            assert resets["next_check_at"] is None, event


def test_the_callers_set_wins_over_a_reset() -> None:
    change = Change(Event.COMPLETED, "test", set={"next_check_at": 5.0})
    assert change.set["next_check_at"] == 5.0 and change.set["lease_until"] == 0.0
    assert Change(None, "test", set={"poll_count": 1}).set == {"poll_count": 1}
