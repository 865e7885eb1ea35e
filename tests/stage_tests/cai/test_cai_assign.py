"""Rendezvous assignment of principles to prompts: removing or adding one principle moves only
its share of samples."""

from __future__ import annotations

import pytest

from stages.cai_lib.assign import assign, assign_all, subsample

PROMPTS = [f"prompt-{i}" for i in range(3000)]
SEVEN = ["safe", "ethical", "honest", "helpful", "curious", "interesting", "refuse-specifically"]


def _samples(assignment: dict[str, list[str]]) -> set[tuple[str, str]]:
    return {(p, b) for p, bs in assignment.items() for b in bs}


@pytest.mark.parametrize("k", [1, 2])
def test_removing_a_principle_reassigns_only_its_samples(k: int) -> None:
    before = assign_all(PROMPTS, SEVEN, k)
    after = assign_all(PROMPTS, [b for b in SEVEN if b != "curious"], k)
    for p in PROMPTS:
        if "curious" in before[p]:
            # kept the others, replaced curious by exactly one new principle
            assert set(before[p]) - {"curious"} <= set(after[p]) and "curious" not in after[p]
        else:
            assert after[p] == before[p], p
    lost = _samples(before) - _samples(after)
    assert lost == {s for s in _samples(before) if s[1] == "curious"}


@pytest.mark.parametrize("k", [1, 2])
def test_adding_a_principle_moves_about_one_in_p_plus_one(k: int) -> None:
    before = _samples(assign_all(PROMPTS, SEVEN, k))
    after = _samples(assign_all(PROMPTS, SEVEN + ["playful"], k))
    new = after - before
    assert all(b == "playful" for _, b in new)  # nothing moves except onto the new principle
    assert len(before - after) == len(new)
    frac = len(new) / len(before)
    assert abs(frac - 1 / 8) < 0.03, frac  # expected 1/(P+1) of all samples


def test_balanced_and_order_independent() -> None:
    a = assign_all(PROMPTS, SEVEN, 1)
    b = assign_all(PROMPTS, list(reversed(SEVEN)), 1)
    assert a == b
    counts = {s: sum(v == [s] for v in a.values()) for s in SEVEN}
    assert all(abs(c - len(PROMPTS) / 7) < 0.2 * len(PROMPTS) / 7 for c in counts.values()), counts


def test_too_many_principles_per_prompt_is_an_error() -> None:
    with pytest.raises(ValueError, match="cannot assign 3 principles"):
        assign("x", ["a", "b"], 3)


def test_subsample_is_stable_when_the_pool_grows() -> None:
    small = subsample(PROMPTS[:1000], 100)
    grown = subsample(PROMPTS, 100)
    assert len(small) == len(grown) == 100
    # a member of the big subset that was already in the small pool was in the small subset
    assert {p for p in grown if p in set(PROMPTS[:1000])} <= set(small)
    assert subsample(PROMPTS[:10], None) == PROMPTS[:10]
