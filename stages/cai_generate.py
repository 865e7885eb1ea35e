"""Stage ``cai-generate``: critique → revision samples for SFT (Constitutional AI, supervised part).

Node ``cai-generate:<model>`` reads the model spec's ``[cai]`` section, its ``constitution`` and
``prompts`` references and the model of each role (``stages/cai_lib/roles.py``): by default
(``generator = "self"``) the instruct model ``export-instruct:<model>`` when the spec has an
``[instruct]`` section, else the exported base model ``export:<model>``. ``critic`` (critiques and
revisions) defaults to the generator.
Each prompt gets ``principles_per_prompt`` principles by rendezvous hashing; each (prompt,
principle) sample is cached on its own under ``cache/samples/cai/``, so editing one principle
regenerates only its samples::

    genesis-build cai-generate:tiny          # logs "generated k / n (cached n-k)"

Outputs: ``samples.jsonl`` (prompt, principle, initial response, critiques, revisions, final),
``sft.jsonl`` (chat messages: user prompt → final revision), ``meta.json``.
"""

from __future__ import annotations


from genesis_build.stage import Context, SpecView, stage

FIELDS = (
    "cai.generator",
    "cai.model",
    "cai.critic",
    "cai.critic_model",
    "cai.decoding",
    "cai.revision_rounds",
    "cai.principles_per_prompt",
    "cai.num_prompts",
    "@constitution.principles",
    "@constitution.system_prompt",
)


def _inputs(view: SpecView, part: str | None) -> dict[str, str]:
    from stages.cai_lib.roles import role_inputs

    spec = view.spec
    ins = {"prompts": spec.prompts} if getattr(spec, "prompts", None) else {}
    return {**ins, **role_inputs(spec, view.name, spec.cai.generator, spec.cai.critic)}


def _files(view: SpecView, part: str | None) -> list[str]:
    # an hf:<dir> role's weights are part of what the samples depend on
    from stages.cai_lib.roles import role_files

    return role_files(view.spec, view.spec.cai.generator, view.spec.cai.critic)


def _check(view: SpecView) -> None:
    from stages.cai_lib.checks import check_cai

    check_cai(view.spec, view.resolve)


def _describe(view: SpecView) -> list[tuple[str, str]]:
    """The roles' models, and (GPU parallel specs) an ESTIMATE of generation time: HF vs vLLM."""
    from genesis_build.errors import GenesisError
    from stages.cai_lib.estimate import cai_generation_rows
    from stages.cai_lib.roles import resolve_role

    spec = view.spec
    gen = resolve_role(spec, spec.cai.generator)
    rows = [("cai roles", f"generator {gen}, critic/reviser {resolve_role(spec, spec.cai.critic) or gen}, "
                          f"feedback {resolve_role(spec, spec.cai.preferences.feedback)}, "
                          f"policy {resolve_role(spec, spec.cai.preferences.policy)}")]
    try:
        parallel = view.resolve(spec.parallel)
        vocab = getattr(view.resolve(spec.tokenizer), "vocab_size", None)
    except GenesisError:
        return rows
    return rows + cai_generation_rows(spec, parallel, vocab if isinstance(vocab, int) else None)


@stage("cai-generate", version=2, kind="model", fields=FIELDS, inputs=_inputs, files=_files, check=_check,
       describe=_describe, heavy=True)
def cai_generate(ctx: Context) -> None:
    """Generate critique/revision samples (cached per sample) and the SFT dataset."""
    from stages.cai_lib import critique
    from stages.cai_lib.generators import open_generator
    from stages.cai_lib.io import read_jsonl, write_json, write_jsonl
    from stages.cai_lib.roles import local_dirs, resolve_role
    from stages.cai_lib.samples import SampleStore

    spec = ctx.spec
    cai = spec.cai
    constitution = ctx.resolve(spec.constitution)
    prompts = read_jsonl(ctx.inputs["prompts"].path / "prompts.jsonl")
    store = SampleStore(ctx.samples_dir("cai"))
    store.clean_temp()

    local = local_dirs(ctx)
    generator, critic_addr = resolve_role(spec, cai.generator), resolve_role(spec, cai.critic)
    gen = open_generator(generator, local_dirs=local, model=cai.model, runtime=cai.runtime)  # fails fast
    critic = None
    if critic_addr is not None and (critic_addr, cai.critic_model) != (generator, cai.model):
        critic = open_generator(critic_addr, local_dirs=local, model=cai.critic_model, runtime=cai.runtime)
    jobs = critique.plan(prompts, constitution, cai, gen.identity, critic.identity if critic else None)
    n = len(jobs)
    todo = len(store.missing(j.key for j in jobs))
    ctx.log(f"cai-generate: {n} samples ({len(prompts)} prompts available, {cai.principles_per_prompt} principle(s) each); "
            f"{todo} to generate with {generator}" + (f", critiques/revisions by {critic_addr}" if critic else ""))
    ctx.progress(0, n, desc="cai samples")
    generated = critique.run(gen, jobs, store, cai, constitution.system_prompt, chunk=cai.runtime.batch_size,
                             on_progress=lambda done, total: ctx.progress(n - todo + done, n, desc="cai samples"),
                             critic=critic)
    gen.close()
    if critic is not None:
        critic.close()

    samples = [store.get(j.key) for j in jobs]
    write_jsonl(ctx.out / "samples.jsonl", samples)
    rows, skipped = critique.sft_rows(jobs, store, None)
    write_jsonl(ctx.out / "sft.jsonl", rows)
    per_principle: dict[str, int] = {}
    for j in jobs:
        per_principle[j.principle_id] = per_principle.get(j.principle_id, 0) + 1
    write_json(ctx.out / "meta.json", {
        "samples": n, "sft_rows": len(rows), "skipped_empty": skipped, "generator": gen.identity,
        "critic": critic.identity if critic else gen.identity,
        "roles": {"generator": generator, "critic": critic_addr or generator},
        "system_prompt": constitution.system_prompt, "per_principle": per_principle,
    })
    summary = f"generated {generated} / {n} (cached {n - generated})"  # printed on the build line
    ctx.stats(generated=generated, cached=n - generated, total=n, skipped_empty=skipped, summary=summary)
    ctx.log(summary)
