"""Which principles apply to which prompt: rendezvous (highest-random-weight) hashing.

Each (prompt, principle) pair gets a pseudo-random score from a hash of both ids; a prompt takes
the ``k`` principles with the highest scores. The score of a pair never depends on the other
principles, so

* removing a principle reassigns only the prompts that had it (they take their next-best one);
* adding one moves a prompt only when the newcomer beats its current k-th best: ~k/(P+1) of the
  prompts, ~1/(P+1) of all (prompt, principle) samples;
* editing a principle's text changes no assignment at all (ids are hashed, not texts), so only
  that principle's samples are regenerated.
"""

from __future__ import annotations

import xxhash


def _score(item: str, bucket: str) -> int:
    # "\0" cannot occur in ids, so ("ab", "c") and ("a", "bc") never collide
    return xxhash.xxh3_64_intdigest(f"{item}\0{bucket}".encode())


def assign(item: str, buckets: list[str], k: int) -> list[str]:
    """The ``k`` buckets of highest rendezvous score for ``item`` (best first)."""
    if k > len(buckets):
        raise ValueError(f"cannot assign {k} principles per prompt from only {len(buckets)}")
    return sorted(buckets, key=lambda b: (-_score(item, b), b))[:k]


def assign_all(items: list[str], buckets: list[str], k: int) -> dict[str, list[str]]:
    """``assign`` for every item."""
    return {item: assign(item, buckets, k) for item in items}


def subsample(items: list[str], n: int | None, salt: str = "prompts") -> list[str]:
    """A stable subset of ``n`` items: the lowest hash scores. Adding items to the pool changes the
    subset only where a newcomer outranks a member, so most cached samples stay valid."""
    if n is None or n >= len(items):
        return list(items)
    keep = set(sorted(items, key=lambda i: (_score(i, salt), i))[:n])
    return [i for i in items if i in keep]  # keep the pool's order for readable outputs


def assigned_prompts(prompts: list[dict], principles: list[str], n: int | None,
                     per_prompt: int) -> list[tuple[dict, list[str]]]:
    """The rows of a stable subsample of ``n`` prompts (by ``id``), each with its rendezvous-assigned
    principles — the one assignment both the CAI samples and the preference pairs follow."""
    by_id = {p["id"]: p for p in prompts}
    chosen = subsample(list(by_id), n)
    return [(by_id[pid], assignment) for pid, assignment in assign_all(chosen, principles, per_prompt).items()]
