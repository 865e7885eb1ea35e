"""Critique → revision samples (the supervised stage of Constitutional AI, Bai et al. 2022 §3).

For each (prompt, principle) the generator writes an initial response, then ``revision_rounds``
times critiques its latest response against the principle and revises it. The final revision is
the SFT target for the prompt. Every sample is cached on its own (see ``samples``); ``plan``
computes the sample keys, ``run`` generates only the missing ones, storing each as soon as its
batch finishes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import xxhash

from . import templates
from .assign import assigned_prompts
from .constitution import ConstitutionSpec, Principle, principle_material
from .samples import SampleStore, sample_key
from .sections import CaiSection, Decoding

SAMPLE_KIND = "cai-revision"


@dataclass(frozen=True)
class Job:
    """One (prompt, principle) sample to look up or generate."""

    key: str
    prompt_id: str
    prompt: str
    category: str | None
    principle_id: str
    principle: Principle
    seed: int


def derive_seed(*parts: Any) -> int:
    """A 63-bit seed from any parts (stable across runs, machines and Python versions)."""
    return xxhash.xxh3_64_intdigest("\0".join(str(p) for p in parts).encode()) & ((1 << 63) - 1)


def plan(prompts: list[dict[str, Any]], constitution: ConstitutionSpec, cai: CaiSection,
         generator: dict[str, Any], critic: dict[str, Any] | None = None) -> list[Job]:
    """The samples a build needs, in output order: chosen prompts × their assigned principles.

    A sample's key covers exactly what its text depends on: the prompt, the system prompt, the
    principle's id/text/templates, the generator identity, the critic identity when a separate
    critic writes the critiques and revisions, the decoding parameters (seed included) and the
    number of revision rounds. (Without a separate critic the key material is what it was before
    critics existed, so those samples stay cached.)
    """
    active = constitution.active()
    decoding = cai.decoding.model_dump(mode="json")
    jobs = []
    for row, principle_ids in assigned_prompts(prompts, list(active), cai.num_prompts, cai.principles_per_prompt):
        pid = row["id"]
        for principle_id in principle_ids:
            principle = active[principle_id]
            key = sample_key(SAMPLE_KIND, {
                "prompt": row["prompt"],
                "system_prompt": constitution.system_prompt,
                "principle": principle_material(principle_id, principle),
                "generator": generator,
                "decoding": decoding,
                "revision_rounds": cai.revision_rounds,
                **({"critic": critic} if critic is not None else {}),
            })
            jobs.append(Job(key, pid, row["prompt"], row.get("category"), principle_id, principle,
                            derive_seed(cai.decoding.seed, key)))
    return jobs


def _first_turn(system_prompt: str, prompt: str) -> list[dict[str, str]]:
    msgs = [{"role": "system", "content": system_prompt}] if system_prompt.strip() else []
    return msgs + [{"role": "user", "content": prompt}]


def generate_batch(gen: Any, jobs: list[Job], decoding: Decoding, rounds: int, system_prompt: str,
                   critic: Any = None) -> list[dict[str, Any]]:
    """Run the response → (critique → revision)×rounds chain for a batch of jobs; ``critic`` (default
    ``gen``) writes the critiques and revisions."""
    from .generators import Request

    critic = critic or gen
    responses = gen.generate([Request(_first_turn(system_prompt, j.prompt), derive_seed(j.seed, "initial")) for j in jobs], decoding)
    records: list[dict[str, Any]] = [{"initial": r, "rounds": []} for r in responses]
    current = list(responses)
    for rnd in range(rounds):
        crit_req = [templates.render(j.principle.critique, prompt=j.prompt, response=cur, principle=j.principle.text)
                    for j, cur in zip(jobs, current)]
        critiques = critic.generate([Request([{"role": "user", "content": c}], derive_seed(j.seed, "critique", rnd))
                                  for j, c in zip(jobs, crit_req)], decoding)
        rev_req = [templates.render(j.principle.revision, prompt=j.prompt, response=cur, principle=j.principle.text,
                                    critique=crit)
                   for j, cur, crit in zip(jobs, current, critiques)]
        revisions = critic.generate([Request([{"role": "user", "content": r}], derive_seed(j.seed, "revision", rnd))
                                  for j, r in zip(jobs, rev_req)], decoding)
        for rec, cq, c, rq, r in zip(records, crit_req, critiques, rev_req, revisions):
            rec["rounds"].append({"critique_request": cq, "critique": c, "revision_request": rq, "revision": r})
        current = list(revisions)
    for rec, j, final in zip(records, jobs, current):
        rec.update({"prompt_id": j.prompt_id, "prompt": j.prompt, "category": j.category, "principle": j.principle_id,
                    "final": final, "generator": gen.identity,
                    **({"critic": critic.identity} if critic is not gen else {})})
    return records


def run(gen: Any, jobs: list[Job], store: SampleStore, cai: CaiSection, system_prompt: str, chunk: int,
        on_progress: Callable[[int, int], None] | None = None, critic: Any = None) -> int:
    """Generate and store the jobs whose samples are missing; returns how many were generated.

    Jobs are processed ``chunk`` at a time and each finished sample is stored immediately, so an
    interrupted run loses at most the chunk in flight.
    """
    missing = set(store.missing(j.key for j in jobs))
    todo = [j for j in dict((j.key, j) for j in jobs).values() if j.key in missing]
    done = 0
    for start in range(0, len(todo), chunk):
        batch = todo[start : start + chunk]
        for job, rec in zip(batch, generate_batch(gen, batch, cai.decoding, cai.revision_rounds, system_prompt, critic)):
            store.put(job.key, rec)
        done += len(batch)
        if on_progress:
            on_progress(done, len(todo))
    return done


def sft_rows(jobs: list[Job], store: SampleStore, system_prompt: str | None) -> tuple[list[dict[str, Any]], int]:
    """Chat-format SFT rows (user prompt → final revision) from stored samples; skips empty
    revisions. Returns (rows, number skipped)."""
    rows, skipped = [], 0
    for j in jobs:
        rec = store.get(j.key)
        if rec is None:
            raise RuntimeError(f"sample {j.key} vanished from the sample store while assembling")
        if not rec["final"].strip():
            skipped += 1
            continue
        msgs = _first_turn(system_prompt, j.prompt) if system_prompt else _first_turn("", j.prompt)
        rows.append({"messages": msgs + [{"role": "assistant", "content": rec["final"]}],
                     "prompt_id": j.prompt_id, "principle": j.principle_id, "sample": j.key})
    return rows, skipped
