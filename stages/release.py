"""Stage ``release``: ``release:<model>`` writes a directory ready to upload as a Hugging Face model
repository — the open-weights release with every number::

    genesis-build release:tiny                      # → out/release:tiny/
    genesis-build release:tiny --push ORG/NAME      # and upload it (token from HF_TOKEN; never automatic)

Contents (docs/release.md has the full layout): the aligned model (the base model when the spec has
no constitution) as safetensors + config + tokenizer with its chat template; ``README.md``, a model
card whose YAML ``model-index`` holds every metric of every eval node (base and aligned) exactly as
in their ``results.json``, with the judge and whether each set was the built-in smoke set or the
benchmark — "not evaluated" for a missing suite, never an invented number — then a training summary
from the manifests, a loss-curve PNG, the constitution's text and the provenance (every spec value
and node key behind the weights); GGUF f16 and q8_0 (``[release] gguf``) written with the ``gguf``
package, tokenizer and chat template embedded; ``evals/<variant>.json``; ``provenance.json``;
``SHA256SUMS`` over every file.

Key: the ``[release]`` section (+ the card template file) and the output digests of the inputs, so
editing the card's license, tags or template rebuilds the release alone.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

from genesis_build.errors import FieldError, GenesisError
from genesis_build.stage import Context, SpecView, stage

HF_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
            "chat_template.jinja", "model.safetensors.index.json")


def _inputs(view: SpecView, part: str | None) -> dict[str, str]:
    spec, name = view.spec, view.name
    ins = {"base": f"export:{name}", "pretrain": f"pretrain:{name}"}
    if getattr(spec, "constitution", None):
        ins.update(aligned=f"export-aligned:{name}", sft=f"sft:{name}", dpo=f"dpo:{name}", cai=f"cai-generate:{name}")
    if getattr(spec, "evals", None):
        ins["eval"] = f"eval:{name}"  # one input per variant: eval/base, eval/aligned
    return ins


def _files(view: SpecView, part: str | None) -> list[str]:
    return [view.spec.release.template] if view.spec.release.template else []


def _check(view: SpecView) -> None:
    """Found before anything runs: a tokenizer llama.cpp cannot reproduce when GGUF files are asked for."""
    spec = view.spec
    if spec.release.gguf and getattr(view.resolve(spec.tokenizer), "split_digits", False):
        raise FieldError("split_digits", "GGUF cannot express split_digits = true: llama.cpp's gpt-2 pre-tokenizer does not "
                         "split digits one by one (set split_digits = false, or [release] gguf = [] in the model spec "
                         "to release without GGUF files)", address=spec.tokenizer)


def release_name(ctx: Context) -> str:
    """The card's model name: ``[release] name`` or ``genesis-<model>``."""
    return ctx.spec.release.name or f"genesis-{ctx.spec_name}"


def _copy_model(src: Path, out: Path) -> list[str]:
    """The HF files of the released model (weights, config, tokenizer, chat template)."""
    copied = []
    for f in sorted(src.iterdir()):
        if f.is_file() and (f.suffix == ".safetensors" or f.name in HF_FILES):
            shutil.copyfile(f, out / f.name)
            copied.append(f.name)
    if not any(n.endswith(".safetensors") for n in copied):
        raise GenesisError(f"release: {src} holds no safetensors weights")
    return copied


def _evals(ctx: Context) -> dict[str, dict[str, Any]]:
    """{variant: results.json} of every eval input, in pipeline order."""
    out = {}
    for name, ref in sorted(ctx.inputs.items()):
        if name == "eval" or name.startswith("eval/"):
            variant = ref.node.split("/", 1)[1] if "/" in ref.node else "base"
            out[variant] = json.loads((ref.path / "results.json").read_text())
    order = {"base": 0, "instruct": 1, "aligned": 2}
    return dict(sorted(out.items(), key=lambda kv: (order.get(kv[0], 9), kv[0])))


def _provenance(ctx: Context, manifests: list[dict[str, Any]]) -> dict[str, Any]:
    from genesis_build import __version__

    src = Path(__file__)
    return {
        "release": {"node": ctx.node, "key": ctx.key, "genesis_build": __version__,
                    "source_sha256": hashlib.sha256(src.read_bytes()).hexdigest(),
                    "release_lib_sha256": {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
                                           for p in sorted((src.parent / "release_lib").glob("*")) if p.is_file()}},
        "nodes": [{"node": m["node"], "key": m["key"], "stage": m.get("stage"), "version": m.get("version"),
                   "source_hash": m.get("source_hash"), "output_digest": m.get("output_digest"),
                   "genesis_build": m.get("genesis_build"), "git_commit": m.get("git_commit"),
                   "spec": m.get("spec") or {}, "files": m.get("files") or {},
                   "inputs": {k: v.get("key") for k, v in (m.get("inputs") or {}).items()}} for m in manifests],
    }


def _human(n: int) -> str:
    for unit, div in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= div:
            return f"{n / div:.1f}{unit}"
    return str(n)


def _training(ctx: Context) -> tuple[list[dict[str, str]], str, dict[str, Any]]:
    """Rows (stage, steps, tokens, final loss) from the training manifests, the hardware line, the pretrain stats."""
    rows = []
    pre = ctx.inputs["pretrain"].manifest
    ps = pre.get("stats") or {}
    for key in ("pretrain", "sft", "dpo"):
        ref = ctx.inputs.get(key)
        if ref is None:
            continue
        st = ref.manifest.get("stats") or {}
        state_file = ref.path / "train_state.json"  # the whole run, also when it was resumed across sessions
        state = json.loads(state_file.read_text()) if state_file.is_file() else {}
        parts = [f"{state.get('step', st.get('total_steps', st.get('steps_run', '?')))} steps"]
        if state.get("tokens_seen") or st.get("tokens"):
            parts.append(f"{state.get('tokens_seen') or st.get('tokens'):,} tokens processed")
        if st.get("assistant_tokens"):
            parts.append(f"{st['assistant_tokens']:,} assistant tokens in {st.get('rows')} examples")
        if st.get("pairs"):
            parts.append(f"{st['pairs']} preference pairs")
        if st.get("final_loss") is not None:
            parts.append(f"final loss {st['final_loss']:.4f}")
        if st.get("final_val_loss") is not None:
            parts.append(f"final validation loss {st['final_val_loss']:.4f}")
        rows.append({"stage": key, "line": ", ".join(parts)})
    hw = [f"host {pre.get('host', '?')}", f"{ps.get('world_size', '?')} ranks"]
    if ps.get("peak_memory_mb_per_rank"):
        hw.append(f"peak {max(ps['peak_memory_mb_per_rank']):.0f} MB per rank")
    if ps.get("tokens_per_s"):
        hw.append(f"{ps['tokens_per_s']:.0f} tokens/s")
    if ps.get("mfu"):
        hw.append(f"MFU {ps['mfu'] * 100:.1f}% ({ps.get('peak_flops_source', 'peak')})")
    if pre.get("wall_time_s"):
        hw.append(f"pretraining wall time {pre['wall_time_s']:.0f} s")
    return rows, ", ".join(hw), ps


def _constitution(ctx: Context) -> dict[str, Any] | None:
    """The constitution the CAI data was generated with (the values cai-generate was keyed on)."""
    ref = ctx.inputs.get("cai")
    if ref is None:
        return None
    spec = ref.manifest.get("spec") or {}
    principles = spec.get("constitution.principles") or {}
    return {"system_prompt": spec.get("constitution.system_prompt"), "address": ctx.spec.constitution,
            "principles": [{"id": k, "text": v.get("text", ""), "enabled": v.get("enabled", True)} for k, v in principles.items()]}


def write_sha256sums(root: Path) -> int:
    """``SHA256SUMS`` (``sha256sum -c`` format) over every other file under ``root``; returns the file count."""
    lines = []
    for f in sorted(p for p in root.rglob("*") if p.is_file() and p.name != "SHA256SUMS"):
        h = hashlib.sha256()
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        lines.append(f"{h.hexdigest()}  {f.relative_to(root).as_posix()}")
    (root / "SHA256SUMS").write_text("\n".join(lines) + "\n")
    return len(lines)


def push(path: Path, repo_id: str) -> str:
    """``genesis-build release:<model> --push ORG/NAME``: upload a built release directory (see stages/release_lib/push.py)."""
    from stages.release_lib.push import push_release

    return push_release(path, repo_id)


def check_push(repo_id: str) -> None:
    """Run by ``--push`` before anything is built: repo id, offline switch and token are checked first."""
    from stages.release_lib.push import check_push as check

    check(repo_id)


@stage("release", version=1, kind="model", fields=("release",), inputs=_inputs, files=_files, check=_check, heavy=True,
       entry="README.md", push=push, check_push=check_push)
def release(ctx: Context) -> None:
    """Write the HF model repo dir: weights, tokenizer, model card with every eval number, GGUF, SHA256SUMS."""
    from stages.release_lib import card
    from stages.release_lib.gguf_export import write_gguf

    rel = ctx.spec.release
    name = release_name(ctx)
    aligned = "aligned" in ctx.inputs
    model_ref = ctx.inputs["aligned" if aligned else "base"]
    out = ctx.out
    files = _copy_model(model_ref.path, out)
    config = json.loads((out / "config.json").read_text())

    ggufs = []
    for q in rel.gguf:
        fname = f"{name}-{q}.gguf"
        ctx.progress(len(ggufs), len(rel.gguf), desc=f"GGUF {q}")
        facts = write_gguf(out, out / fname, q, name, {"license": rel.license, "tags": list(rel.tags),
                                                       "languages": list(rel.language)})
        ggufs.append({"file": fname, "type": q, "fallback_f16": facts["fallback_f16"], "tensors": facts["tensors"]})
        if facts["fallback_f16"]:
            ctx.log(f"release: {fname}: {len(facts['fallback_f16'])} tensors have rows not a multiple of 32 → F16 "
                    f"(as llama.cpp does): {', '.join(facts['fallback_f16'][:6])}")

    evals = _evals(ctx)
    if evals:
        (out / "evals").mkdir()
        for variant, res in evals.items():
            (out / "evals" / f"{variant}.json").write_text(json.dumps(res, indent=2, ensure_ascii=False) + "\n")
    manifests = ctx.upstream_manifests()
    provenance = _provenance(ctx, manifests)
    (out / "provenance.json").write_text(json.dumps(provenance, indent=1, sort_keys=True, ensure_ascii=False) + "\n")

    metrics = [(k, ctx.inputs[k].path / "metrics.jsonl") for k in ("pretrain", "sft", "dpo") if k in ctx.inputs]
    curve = "loss_curve.png" if card.loss_curve(metrics, out / "loss_curve.png") else None
    training, hardware, ps = _training(ctx)
    params = int(model_ref.manifest.get("stats", {}).get("params") or ps.get("params") or 0)
    sets = card.suite_sets(evals)
    smoke = sorted(s for s, v in sets.items() if v["smoke"])
    expected = ["base"] + (["instruct"] if ctx.spec.instruct is not None else []) + (["aligned"] if aligned else [])
    notice = None
    if smoke:
        notice = (f"**Smoke-test numbers.** The evaluations of this release ran on genesis-build's built-in smoke sets for "
                  f"{', '.join(smoke)} — a handful of items written for the pipeline's tests, not the real benchmarks — so "
                  "those numbers show that the pipeline works, not how good the model is.")
    elif not evals:
        notice = "**Not evaluated.** This release was built without an evals spec; the card holds no eval numbers."
    real = sorted(s for s, v in sets.items() if not v["smoke"])
    sets_summary = ("the built-in smoke sets" if smoke and not real else "the real benchmarks" if real and not smoke else
                    f"the benchmarks for {', '.join(real)} and smoke sets for {', '.join(smoke)}" if sets else "nothing (not evaluated)")
    arch = (f"Llama decoder, {config['num_hidden_layers']} layers, hidden {config['hidden_size']}, "
            f"{config['num_attention_heads']} heads ({config.get('num_key_value_heads') or config['num_attention_heads']} KV), "
            f"SwiGLU {config['intermediate_size']}, RoPE θ {(config.get('rope_parameters') or {}).get('rope_theta', config.get('rope_theta'))}, "
            f"context {config['max_position_embeddings']}, {'tied' if config.get('tie_word_embeddings') else 'untied'} embeddings, "
            f"{config.get('dtype') or config.get('torch_dtype')}")
    context = {
        "name": name, "model": ctx.spec_name, "repo_id": rel.repo_id or f"ORG/{name}", "notice": notice,
        "aligned": aligned, "instruct": "instruct" in expected, "params": f"{params:,}", "params_human": _human(params), "sets": sets, "sets_summary": sets_summary,
        "missing_suites": [s for s in card.SUITES if s not in sets], "eval_table": card.eval_table(evals, expected),
        "gguf": ggufs, "loss_curve": curve, "training": training, "hardware": hardware, "arch_line": arch,
        "vocab_size": config["vocab_size"], "constitution": _constitution(ctx), "license": rel.license,
        "genesis_version": provenance["release"]["genesis_build"], "release_key": ctx.key,
        "provenance": [{"node": n["node"], "key": n["key"], "version": n["version"], "source_hash": n["source_hash"]}
                       for n in provenance["nodes"]],
    }
    template = ctx.files[0].read_text() if rel.template else card.TEMPLATE.read_text()
    data = card.front_matter(rel, name, evals, aligned, None)
    try:
        text = card.render(template, data, context)
    except Exception as e:  # a custom template's error is the user's: one line naming the file
        if type(e).__module__.split(".")[0] != "jinja2":
            raise
        where = rel.template or "stages/release_lib/card.md.j2"
        raise GenesisError(f"{where}: card template error: {e}") from None
    (out / "README.md").write_text(text)
    n = write_sha256sums(out)
    metrics_n = len(card.eval_rows(evals))
    ctx.stats(files=n, gguf=[g["file"] for g in ggufs], fallback_f16={g["type"]: len(g["fallback_f16"]) for g in ggufs},
              eval_metrics=metrics_n, smoke_suites=smoke, model=model_ref.node, copied=files)
    ctx.log(f"release: {name} → {out} ({n} files, {metrics_n} eval numbers, GGUF {', '.join(rel.gguf) or 'none'})")
