"""AI-feedback preference pairs (the RL-from-AI-feedback part of Bai et al. 2022, §4).

For each chosen prompt the policy (normally the SFT model) writes two responses at different
seeds. For each principle assigned to the prompt, a feedback model reads a multiple-choice prompt
(the constitution's ``feedback`` template: the conversation, the principle's question, options
(A) and (B)) and we compare the log-probabilities it gives to "A" and "B" as the next token. With
``debias`` the options are judged in both orders and averaged, cancelling position bias.

Responses and judgments are cached separately: editing a principle re-judges its pairs without
re-sampling any response; changing the policy re-samples and re-judges.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

from . import templates
from .assign import assigned_prompts
from .constitution import ConstitutionSpec, Principle
from .critique import derive_seed
from .samples import SampleStore, sample_key
from .sections import CaiSection, Decoding

RESPONSE_KIND = "cai-response"
JUDGMENT_KIND = "cai-judgment"
CHOICES = ("A", "B")  # the feedback template ends with "(": the next token is the answer letter


@dataclass(frozen=True)
class ResponseJob:
    """One policy response to look up or sample."""

    key: str
    prompt: str
    seed: int


@dataclass(frozen=True)
class PairJob:
    """Two responses to one prompt, to be judged against one principle."""

    prompt_id: str
    prompt: str
    category: str | None
    principle_id: str
    principle: Principle
    responses: tuple[ResponseJob, ResponseJob]


def plan(prompts: list[dict[str, Any]], constitution: ConstitutionSpec, cai: CaiSection, policy: dict[str, Any],
         system_prompt: str) -> list[PairJob]:
    """Pair jobs in output order: chosen prompts × assigned principles (same rendezvous as SFT)."""
    prefs = cai.preferences
    active = constitution.active()
    decoding = prefs.decoding.model_dump(mode="json")
    jobs = []
    for row, principle_ids in assigned_prompts(prompts, list(active), prefs.num_prompts, cai.principles_per_prompt):
        pid = row["id"]
        responses = []
        for index in range(2):
            key = sample_key(RESPONSE_KIND, {"prompt": row["prompt"], "system_prompt": system_prompt, "generator": policy,
                                             "decoding": decoding, "index": index})
            responses.append(ResponseJob(key, row["prompt"], derive_seed(prefs.decoding.seed, key)))
        for principle_id in principle_ids:
            jobs.append(PairJob(pid, row["prompt"], row.get("category"), principle_id, active[principle_id],
                                (responses[0], responses[1])))
    return jobs


def response_jobs(jobs: list[PairJob]) -> list[ResponseJob]:
    """Distinct responses the pair jobs need, in order."""
    seen: dict[str, ResponseJob] = {}
    for j in jobs:
        for r in j.responses:
            seen.setdefault(r.key, r)
    return list(seen.values())


def sample_responses(gen: Any, jobs: list[ResponseJob], store: SampleStore, decoding: Decoding, system_prompt: str,
                     chunk: int, on_progress: Callable[[int, int], None] | None = None) -> int:
    """Sample and store the missing responses; returns how many were generated."""
    from .generators import Request

    missing = set(store.missing(j.key for j in jobs))
    todo = [j for j in jobs if j.key in missing]
    for start in range(0, len(todo), chunk):
        batch = todo[start : start + chunk]
        msgs = [([{"role": "system", "content": system_prompt}] if system_prompt.strip() else [])
                + [{"role": "user", "content": j.prompt}] for j in batch]
        texts = gen.generate([Request(m, j.seed) for m, j in zip(msgs, batch)], decoding)
        for j, text in zip(batch, texts):
            store.put(j.key, {"prompt": j.prompt, "response": text, "generator": gen.identity})
        if on_progress:
            on_progress(start + len(batch), len(todo))
    return len(todo)


def judgment_key(job: PairJob, texts: tuple[str, str], constitution: ConstitutionSpec, judge: dict[str, Any],
                 debias: bool) -> str:
    """Key of one judgment: the texts judged, the question asked, the template and the judge."""
    return sample_key(JUDGMENT_KIND, {"prompt": job.prompt, "responses": list(texts), "question": job.principle.question(),
                                      "template": constitution.feedback, "judge": judge, "debias": debias})


def feedback_prompt(template: str, prompt: str, question: str, a: str, b: str) -> str:
    """The multiple-choice prompt shown to the feedback model."""
    return templates.render(template, prompt=prompt, principle=question, response_a=a, response_b=b)


def _p_first(lp: list[float]) -> float:
    m = max(lp)
    e = [math.exp(x - m) for x in lp]
    return e[0] / sum(e)


def judge_pairs(judge: Any, jobs: list[PairJob], store: SampleStore, constitution: ConstitutionSpec, debias: bool,
                chunk: int, on_progress: Callable[[int, int], None] | None = None) -> int:
    """Judge the pairs whose judgment is missing; returns how many were judged."""
    todo: dict[str, tuple[PairJob, tuple[str, str]]] = {}
    for j in jobs:
        texts = (store.get(j.responses[0].key)["response"], store.get(j.responses[1].key)["response"])
        key = judgment_key(j, texts, constitution, judge.identity, debias)
        if key not in todo and not store.has(key):
            todo[key] = (j, texts)
    items = list(todo.items())
    for start in range(0, len(items), chunk):
        batch = items[start : start + chunk]
        prompts = []
        for _, (j, (r0, r1)) in batch:
            q = j.principle.question()
            prompts.append(feedback_prompt(constitution.feedback, j.prompt, q, r0, r1))
            if debias:
                prompts.append(feedback_prompt(constitution.feedback, j.prompt, q, r1, r0))
        scores = judge.choice_logprobs(prompts, list(CHOICES))
        step = 2 if debias else 1
        for i, (key, (j, texts)) in enumerate(batch):
            ab = scores[i * step]
            record = {"logprobs_ab": ab, "p_first": _p_first(ab), "log_odds_first": ab[0] - ab[1]}
            if debias:
                ba = scores[i * step + 1]
                record.update({"logprobs_ba": ba, "p_first": (_p_first(ab) + (1 - _p_first(ba))) / 2,
                               "log_odds_first": ((ab[0] - ab[1]) + (ba[1] - ba[0])) / 2})
            store.put(key, {**record, "principle": j.principle_id, "judge": judge.identity})
        if on_progress:
            on_progress(start + len(batch), len(items))
    return len(items)


def pair_rows(jobs: list[PairJob], store: SampleStore, constitution: ConstitutionSpec, judge: dict[str, Any],
              debias: bool, min_margin: float, system_prompt: str) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """chosen/rejected rows with margins; drops ties, identical and empty responses."""
    rows, dropped = [], {"identical": 0, "empty": 0, "below_margin": 0}
    for j in jobs:
        texts = (store.get(j.responses[0].key)["response"], store.get(j.responses[1].key)["response"])
        if not texts[0].strip() or not texts[1].strip():
            dropped["empty"] += 1
            continue
        if texts[0] == texts[1]:
            dropped["identical"] += 1
            continue
        verdict = store.get(judgment_key(j, texts, constitution, judge, debias))
        if verdict is None:
            raise RuntimeError(f"judgment for {j.prompt_id}/{j.principle_id} vanished from the sample store")
        log_odds = verdict["log_odds_first"]
        if abs(log_odds) <= min_margin:
            dropped["below_margin"] += 1
            continue
        first_wins = log_odds > 0
        chosen, rejected = (texts[0], texts[1]) if first_wins else (texts[1], texts[0])
        p = verdict["p_first"] if first_wins else 1 - verdict["p_first"]
        msgs = ([{"role": "system", "content": system_prompt}] if system_prompt.strip() else []) + \
            [{"role": "user", "content": j.prompt}]
        rows.append({"prompt": msgs, "chosen": chosen, "rejected": rejected, "margin": abs(log_odds), "p_chosen": p,
                     "principle": j.principle_id, "prompt_id": j.prompt_id, "category": j.category})
    return rows, dropped
