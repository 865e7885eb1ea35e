"""``genesis-build release:e2e`` through the real CLI after the whole tiny pipeline (model:tiny with
fewer steps): the directory loads in transformers, both GGUFs load in transformers with matching
logits, the card's model-index equals the eval nodes' numbers exactly, ``sha256sum -c`` passes, a
missing suite is "not evaluated", ``--push`` without a token / offline / unreachable is one line and
exit 2, and editing only ``[release]`` (license, tags, template) rebuilds the release alone.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from release_testlib import ReleaseWorkspace, compare_gguf

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> ReleaseWorkspace:
    w = ReleaseWorkspace(tmp_path_factory.mktemp("release") / "ws")
    r = w.cli("release:e2e")
    assert r.returncode == 0, (r.stdout + r.stderr)[-6000:]
    assert "release:e2e → out/release:e2e/README.md" in r.stdout, r.stdout[-2000:]
    return w


def _eval_numbers(ws: ReleaseWorkspace, model: str) -> set[tuple[str, str, str, float]]:
    """(variant, task, metric, value) of every number in the eval nodes' results.json (the truth)."""
    out = set()
    for variant in ("base", "instruct", "aligned"):
        res = json.loads((ws.data(f"eval:{model}/{variant}") / "results.json").read_text())
        for task, metrics in res["results"].items():
            for metric, value in metrics.items():
                if metric != "alias" and not metric.endswith("_stderr") and isinstance(value, (int, float)) \
                        and not isinstance(value, bool):
                    out.add((variant, task, metric, value))
    return out


def test_release_layout_loads_and_checksums(ws: ReleaseWorkspace) -> None:
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    d = ws.root / "out" / "release:e2e"
    names = {p.relative_to(d).as_posix() for p in d.rglob("*") if p.is_file()}
    assert {"README.md", "SHA256SUMS", "model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json",
            "genesis-e2e-f16.gguf", "genesis-e2e-q8_0.gguf", "loss_curve.png", "provenance.json",
            "evals/base.json", "evals/instruct.json", "evals/aligned.json"} <= names, sorted(names)
    listed = {line.split("  ", 1)[1] for line in (d / "SHA256SUMS").read_text().splitlines()}
    assert listed == names - {"SHA256SUMS"}
    r = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=d, capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.count(": OK") == len(listed), r.stdout + r.stderr
    assert (d / "loss_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # the released weights are the aligned export's, and the directory works on its own
    aligned = load_file(str(ws.data("export-aligned:e2e") / "model.safetensors"))
    released = load_file(str(d / "model.safetensors"))
    assert aligned.keys() == released.keys() and all(torch.equal(aligned[k], released[k]) for k in aligned)
    tok = AutoTokenizer.from_pretrained(d)
    model = AutoModelForCausalLM.from_pretrained(d)
    ids = tok.apply_chat_template([{"role": "user", "content": "What is a prime number?"}], add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)["input_ids"]
    assert tok.decode(ids[0]).endswith("<|assistant|>\n")
    assert model.generate(ids, max_new_tokens=4, do_sample=False).shape[1] > ids.shape[1]
    prov = json.loads((d / "provenance.json").read_text())
    nodes = {n["node"]: n for n in prov["nodes"]}
    for node in ("pretrain:e2e", "tokenizer:tiny", "corpus:tiny", "sft:e2e", "dpo:e2e", "export-aligned:e2e", "eval:e2e/base"):
        assert nodes[node]["key"] in ws.manifests(), node  # the exact keys that produced the weights
    assert nodes["pretrain:e2e"]["spec"]["model.training.steps"] == 40 and prov["release"]["genesis_build"]


@pytest.mark.parametrize("qtype", ["f16", "q8_0"])
def test_gguf_loads_in_transformers_and_matches(ws: ReleaseWorkspace, qtype: str) -> None:
    d = ws.root / "out" / "release:e2e"
    top1, maxdiff = compare_gguf(d, f"genesis-e2e-{qtype}.gguf")
    print(f"release:e2e {qtype}: top-1 agreement {top1:.4f}, max |Δlogit| {maxdiff:.4g}")
    if qtype == "f16":
        assert top1 >= 0.99 and maxdiff < 0.05, (top1, maxdiff)
    else:
        assert top1 >= 0.9, (top1, maxdiff)  # reported above; Q8_0 is lossy by design


def test_card_model_index_is_exactly_the_eval_nodes(ws: ReleaseWorkspace) -> None:
    from huggingface_hub import ModelCard

    card = ModelCard.load(ws.root / "out" / "release:e2e" / "README.md")
    got = {(e.metric_config, e.dataset_config, e.metric_type, e.metric_value) for e in card.data.eval_results}
    assert len(card.data.eval_results) == len(got)  # no duplicates
    assert got == _eval_numbers(ws, "e2e")
    assert all(e.metric_args["set"] == "smoke" and e.metric_args["judge"] for e in card.data.eval_results)
    harm = [e for e in card.data.eval_results if e.dataset_config == "harmbench"]
    assert harm and all("refusal detector" in e.metric_args["judge"] for e in harm)
    assert card.data.license == "apache-2.0" and {"tiny", "gguf", "constitutional-ai"} <= set(card.data.tags)
    body = card.text.strip().split("\n\n")
    assert body[0] == "# genesis-e2e" and "built-in smoke sets" in body[1] and "not the real benchmarks" in body[1]
    assert "## Constitution" in card.text and "Be curious. Ask follow-up questions." in card.text
    assert "![loss curves](loss_curve.png)" in card.text and "not evaluated" not in card.text


def test_missing_suite_is_not_evaluated(ws: ReleaseWorkspace) -> None:
    """Only TruthfulQA in the evals spec: the other suites say "not evaluated", no number is invented;
    training is reused from the cache (same key material as model:e2e)."""
    from huggingface_hub import ModelCard

    (ws.root / "specs/evals/tq.toml").write_text('[truthfulqa]\nlimit = 8\n')
    (ws.root / "specs/model/e2e-tq.toml").write_text('extends = "model:e2e"\nevals = "evals:tq"\n')
    before = ws.manifests()
    r = ws.cli("release:e2e-tq")
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    ran = {m["node"] for k, m in ws.manifests().items() if k not in before}
    assert {"eval:e2e-tq/base", "eval:e2e-tq/instruct", "eval:e2e-tq/aligned", "release:e2e-tq"} <= ran <= \
        {"eval:e2e-tq/base", "eval:e2e-tq/instruct", "eval:e2e-tq/aligned", "release:e2e-tq", "eval-data:tq/truthfulqa"}, ran
    card = ModelCard.load(ws.root / "out" / "release:e2e-tq" / "README.md")
    assert {e.dataset_config for e in card.data.eval_results} == {"truthfulqa_mc1", "truthfulqa_mc2"}
    for suite in ("harmbench", "xstest", "engagement"):
        assert f"- **{suite}**: not evaluated." in card.text
        assert f"| {suite} | — | — | not evaluated | not evaluated | not evaluated | — |" in card.text  # base, instruct, aligned


def test_push_needs_a_token_and_the_network(ws: ReleaseWorkspace, tmp_path: Path) -> None:
    from genesis_testlib import free_port

    before = ws.manifests()
    r = ws.cli("release:e2e", "--push", "genesis/tiny-test")
    assert r.returncode == 2 and "no Hugging Face token" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "Traceback" not in r.stderr and ws.manifests().keys() == before.keys()
    r = ws.cli("release:e2e", "--push", "genesis/tiny-test", env={"HF_HUB_OFFLINE": "1", "HF_TOKEN": "hf_fake"})
    assert r.returncode == 2 and "offline" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    r = ws.cli("release:e2e", "--push", "not a repo")
    assert r.returncode == 2 and "expected ORG/NAME" in r.stderr, r.stderr
    # a token but no reachable Hub (a closed port on 127.0.0.1): one line, nothing committed
    port = free_port()
    r = ws.cli("release:e2e", "--push", "genesis/tiny-test", env={"HF_TOKEN": "hf_fake", "HF_ENDPOINT": f"http://127.0.0.1:{port}"},
               timeout=300)
    assert r.returncode == 2 and "cannot reach the Hub" in r.stderr and "rerun" in r.stderr, r.stdout + r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    # a target that is not a release cannot be pushed
    r = ws.cli("export:e2e", "--push", "genesis/tiny-test", env={"HF_TOKEN": "hf_fake"})
    assert r.returncode == 2 and "cannot be pushed" in r.stderr, r.stderr


def test_release_bytes_are_deterministic(ws: ReleaseWorkspace) -> None:
    """Rebuilding the same key gives the same bytes (GGUF, PNG, card), so dependents stay cached."""
    def digests() -> list[str]:
        return [m["output_digest"] for m in ws.manifests().values() if m["node"] == "release:e2e"]

    before = digests()
    r = ws.cli("release:e2e", "--force", "release:e2e")
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert len(before) == 1 and digests() == before


def test_editing_only_the_card_reruns_release_alone(ws: ReleaseWorkspace) -> None:
    from huggingface_hub import ModelCard

    spec = ws.root / "specs/model/e2e.toml"
    (ws.root / "card.md.j2").write_text("Custom card for {{ name }} ({{ params }} parameters).\n\n{{ eval_table }}\n")
    spec.write_text(spec.read_text().replace('license = "apache-2.0"\ntags = ["tiny"]',
                                             'license = "mit"\ntags = ["tiny", "edited"]\ntemplate = "card.md.j2"'))
    st = ws.status("release:e2e")
    stale = {n for n, s in st.items() if s["state"] != "cached"}
    assert stale == {"release:e2e"}, {n: s["state"] for n, s in st.items()}
    assert "spec field model.release" in st["release:e2e"]["reason"]
    before = ws.manifests()
    r = ws.cli("release:e2e")
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    assert {m["node"] for k, m in ws.manifests().items() if k not in before} == {"release:e2e"}
    card = ModelCard.load(ws.root / "out" / "release:e2e" / "README.md")
    assert card.data.license == "mit" and "edited" in card.data.tags
    assert "Custom card for genesis-e2e" in card.text
    assert "built-in smoke sets" in card.text.strip().split("\n\n")[1]  # a custom template keeps the notice first
    # the template file's content is in the key: editing it alone reruns the release alone
    (ws.root / "card.md.j2").write_text("Another card for {{ name }}.\n")
    st = ws.status("release:e2e")
    assert {n for n, s in st.items() if s["state"] != "cached"} == {"release:e2e"}
    assert "card.md.j2" in st["release:e2e"]["reason"]
