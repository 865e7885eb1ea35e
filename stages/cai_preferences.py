"""Stage ``cai-preferences``: AI-feedback preference pairs for DPO.

Node ``cai-preferences:<model>``: the policy (``[cai.preferences] policy``, default the SFT model
``sft:<model>``) writes two responses per prompt; the feedback model (``feedback = "self"`` by
default: the instruct model ``export-instruct:<model>`` when the spec has ``[instruct]``, else the
pretrained base ``export:<model>``; roles in ``stages/cai_lib/roles.py``) scores which better
satisfies each assigned principle via the log-probabilities of "(A)"/"(B)". Responses (keyed by
the policy's identity) and judgments (keyed by the judge's identity) are cached per item under
``cache/samples/cai/``, so changing only the feedback model re-judges every pair without sampling a
response again. Output: ``pairs.jsonl`` (prompt messages, chosen, rejected, margin,
p_chosen, principle) and ``meta.json``::

    genesis-build cai-preferences:tiny
"""

from __future__ import annotations

from typing import Any

from genesis_build.stage import Context, SpecView, stage

FIELDS = (
    "cai.preferences",
    "cai.principles_per_prompt",
    "sft.system_prompt",
    "@constitution.principles",
    "@constitution.feedback",
    "@constitution.system_prompt",
)


def _inputs(view: SpecView, part: str | None) -> dict[str, str]:
    from stages.cai_lib.roles import role_inputs

    spec = view.spec
    prefs = spec.cai.preferences
    ins = {"prompts": spec.prompts} if getattr(spec, "prompts", None) else {}
    return {**ins, **role_inputs(spec, view.name, prefs.policy, prefs.feedback)}


def _files(view: SpecView, part: str | None) -> list[str]:
    from stages.cai_lib.roles import role_files

    prefs = view.spec.cai.preferences
    return role_files(view.spec, prefs.policy, prefs.feedback)


def _check(view: SpecView) -> None:
    from stages.cai_lib.checks import check_preferences

    check_preferences(view.spec, view.resolve)


@stage("cai-preferences", version=2, kind="model", fields=FIELDS, inputs=_inputs, files=_files, check=_check, heavy=True)
def cai_preferences(ctx: Context) -> None:
    """Sample response pairs and judge them with AI feedback against the principles."""
    from stages.cai_lib import preferences as P
    from stages.cai_lib.generators import open_generator
    from stages.cai_lib.io import read_jsonl, write_json, write_jsonl
    from stages.cai_lib.roles import local_dirs, resolve_role
    from stages.cai_lib.samples import SampleStore

    spec = ctx.spec
    cai, prefs = spec.cai, spec.cai.preferences
    constitution = ctx.resolve(spec.constitution)
    system_prompt = constitution.system_prompt if spec.sft.system_prompt else ""
    prompts = read_jsonl(ctx.inputs["prompts"].path / "prompts.jsonl")
    store = SampleStore(ctx.samples_dir("cai"))
    store.clean_temp()

    local: dict[str, Any] = local_dirs(ctx)
    policy_addr, feedback_addr = resolve_role(spec, prefs.policy), resolve_role(spec, prefs.feedback)
    # open (and probe) both models before any work, so a bad URL fails with nothing done
    policy = open_generator(policy_addr, local_dirs=local, model=prefs.policy_model, runtime=cai.runtime)
    same = feedback_addr == policy_addr and prefs.feedback_model == prefs.policy_model
    judge = policy if same else open_generator(feedback_addr, local_dirs=local, model=prefs.feedback_model, runtime=cai.runtime)

    jobs = P.plan(prompts, constitution, cai, policy.identity, system_prompt)
    responses = P.response_jobs(jobs)
    ctx.log(f"cai-preferences: {len(jobs)} pairs over {len(responses) // 2} prompts; policy {policy_addr}, feedback {feedback_addr}")
    chunk = cai.runtime.batch_size
    n_resp = P.sample_responses(policy, responses, store, prefs.decoding, system_prompt, chunk,
                                on_progress=lambda d, t: ctx.progress(d, t, desc="responses"))
    ctx.log(f"responses: generated {n_resp} / {len(responses)} (cached {len(responses) - n_resp})")
    if policy is not judge:
        policy.close()
    n_judged = P.judge_pairs(judge, jobs, store, constitution, prefs.debias, chunk,
                             on_progress=lambda d, t: ctx.progress(d, t, desc="judgments"))
    ctx.log(f"judgments: generated {n_judged} / {len(jobs)} (cached {len(jobs) - n_judged})")
    judge.close()

    rows, dropped = P.pair_rows(jobs, store, constitution, judge.identity, prefs.debias, prefs.min_margin, system_prompt)
    write_jsonl(ctx.out / "pairs.jsonl", rows)
    write_json(ctx.out / "meta.json", {"pairs": len(rows), "jobs": len(jobs), "dropped": dropped,
                                        "policy": policy.identity, "feedback": judge.identity,
                                        "roles": {"policy": policy_addr, "feedback": feedback_addr}})
    generated = n_resp + n_judged
    total = len(responses) + len(jobs)
    summary = f"generated {generated} / {total} (cached {total - generated}); {len(rows)} pairs"  # the build line
    ctx.stats(generated=generated, cached=total - generated, total=total, responses_generated=n_resp,
              judgments_generated=n_judged, pairs=len(rows), **{f"dropped_{k}": v for k, v in dropped.items()},
              summary=summary)
    ctx.log(summary)
