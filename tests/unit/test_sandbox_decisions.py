"""Seeded decisions: fixed per (seed, kind, key), exact at 0 and 1, fair in between."""

from __future__ import annotations

from service.sandbox.decisions import Decider


def test_same_seed_kind_and_key_give_the_same_answer() -> None:
    assert Decider(5).unit("create_5xx", "abc#0") == Decider(5).unit("create_5xx", "abc#0")
    assert Decider(5).unit("create_5xx", "abc#0") != Decider(6).unit("create_5xx", "abc#0")
    assert Decider(5).unit("create_5xx", "abc#0") != Decider(5).unit("task_fail", "abc#0")


def test_probability_zero_and_one_are_exact() -> None:
    decider = Decider(1)
    keys = [f"k{n}" for n in range(200)]
    assert all(decider.chance("x", k, 1.0) for k in keys)
    assert not any(decider.chance("x", k, 0.0) for k in keys)


def test_chance_is_roughly_fair() -> None:
    decider = Decider(2)
    hits = sum(decider.chance("x", f"k{n}", 0.3) for n in range(5000))
    assert 1300 < hits < 1700


def test_uniform_and_choice_stay_in_range() -> None:
    decider = Decider(3)
    values = [decider.uniform("latency", f"k{n}", 0.5, 2.0) for n in range(500)]
    assert all(0.5 <= v < 2.0 for v in values)
    assert {decider.choice("code", f"k{n}", (500, 502, 503)) for n in range(100)} == {500, 502, 503}
