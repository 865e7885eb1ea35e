"""GGUF export: transformers loads each file and its logits match the safetensors model; Q8_0 falls
back to F16 for tensors whose rows are not whole 32-value blocks; the tokenizer and chat template
are embedded; what GGUF cannot express is refused with one line naming the field."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from release_testlib import TEXT, compare_gguf


@pytest.fixture(scope="module")
def written(odd_lm: Path, tmp_path_factory) -> tuple[Path, dict]:
    from stages.release_lib.gguf_export import write_gguf

    d = tmp_path_factory.mktemp("gguf")
    for f in odd_lm.iterdir():
        shutil.copy(f, d / f.name)
    facts = {q: write_gguf(d, d / f"m-{q}.gguf", q, "odd") for q in ("f16", "q8_0")}
    return d, facts


def test_q8_0_blocks_of_32_and_f16_fallback(written) -> None:
    import gguf
    from safetensors.numpy import load_file

    d, facts = written
    shapes = {k: v.shape for k, v in load_file(str(d / "model.safetensors")).items()}
    reader = gguf.GGUFReader(str(d / "m-q8_0.gguf"))
    types = {t.name: t.tensor_type.name for t in reader.tensors}
    assert types == facts["q8_0"]["types"]
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, 2)
    expect_fallback = []
    for hf, shape in shapes.items():
        new = names.get_name(hf, try_suffixes=(".weight",))
        if len(shape) == 1:
            assert types[new] == "F32", hf
        elif shape[-1] % 32:
            assert types[new] == "F16", hf  # 48-wide rows: not whole Q8_0 blocks
            expect_fallback.append(new)
        else:
            assert types[new] == "Q8_0", hf  # ffn_down: 96-wide rows
    assert expect_fallback and sorted(facts["q8_0"]["fallback_f16"]) == sorted(expect_fallback)
    assert "Q8_0" in types.values()
    assert set(facts["f16"]["types"].values()) == {"F16", "F32"} and not facts["f16"]["fallback_f16"]


@pytest.mark.parametrize("qtype", ["f16", "q8_0"])
def test_transformers_loads_gguf_and_logits_match(written, qtype: str) -> None:
    d, _ = written
    top1, maxdiff = compare_gguf(d, f"m-{qtype}.gguf")
    print(f"{qtype}: top-1 agreement {top1:.4f}, max |Δlogit| {maxdiff:.4g}")
    if qtype == "f16":
        assert top1 >= 0.99 and maxdiff < 0.05
    else:
        assert top1 >= 0.9 and maxdiff < 0.5  # reported; 8-bit blocks, still close on a tiny model


def test_tokenizer_and_chat_template_are_embedded(written) -> None:
    from transformers import AutoTokenizer
    from transformers.integrations.gguf.gguf_tokenizer_mapping import get_gguf_tokenizer

    d, _ = written
    hf = AutoTokenizer.from_pretrained(d)
    arch, tok, cfg = get_gguf_tokenizer(str(d / "m-q8_0.gguf"))
    assert arch == "llama" and tok["tokenizer_type"] == "gpt2" and tok["pre_tokenizer_type"] == "gpt-2"
    vocab = hf.get_vocab()
    assert tok["tokens"] == [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    data = json.loads((d / "tokenizer.json").read_text())
    assert len(tok["merges"]) == len(data["model"]["merges"]) > 0
    specials = {vocab[t] for t in hf.all_special_tokens}
    assert {i for i, t in enumerate(tok["token_type"]) if t == 3} == specials  # CONTROL
    assert cfg["chat_template"] == hf.chat_template and cfg["bos_token"] == hf.bos_token and cfg["eos_token"] == hf.eos_token
    assert cfg["add_bos_token"] is False  # our tokenizer adds no BOS; llama.cpp must not either
    from_gguf = AutoTokenizer.from_pretrained(d, gguf_file="m-q8_0.gguf")
    assert from_gguf(TEXT).input_ids == hf(TEXT).input_ids


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


@pytest.mark.parametrize("field,value,expect", [
    ("hidden_act", "gelu", "config.json field hidden_act"),
    ("attention_bias", True, "config.json field attention_bias"),
    ("rope_parameters", {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 2.0}, "config.json field rope_parameters.rope_type"),
])
def test_inexpressible_config_is_one_line_naming_the_field(odd_lm: Path, tmp_path: Path, field, value, expect) -> None:
    from stages.release_lib.gguf_export import GGUFUnsupported, write_gguf

    d = _copy(odd_lm, tmp_path / "m")
    cfg = json.loads((d / "config.json").read_text())
    cfg[field] = value
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(GGUFUnsupported) as e:
        write_gguf(d, d / "x.gguf", "f16", "x")
    msg = str(e.value)
    assert expect in msg and "\n" not in msg and e.value.exit_code == 2
    assert not (d / "x.gguf").exists()


def test_split_digits_tokenizer_is_refused(odd_lm: Path, tmp_path: Path) -> None:
    from stages.release_lib.gguf_export import GGUFUnsupported, check_gguf_support

    d = _copy(odd_lm, tmp_path / "m")
    data = json.loads((d / "tokenizer.json").read_text())
    data["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": True},
                                                                    data["pre_tokenizer"]]}
    (d / "tokenizer.json").write_text(json.dumps(data))
    with pytest.raises(GGUFUnsupported, match=r"tokenizer.json field pre_tokenizer = Digits\+ByteLevel \(tokenizer spec field split_digits"):
        check_gguf_support(d)


@pytest.mark.parametrize("qtype", ["f16", "q8_0"])
def test_llama_cpp_runs_the_file(written, qtype: str) -> None:
    """llama.cpp itself (llama-cpp-python, when installed: it builds from source) loads the file:
    same token ids as the HF tokenizer, logits agree with the safetensors model, and the embedded
    chat template drives a chat completion."""
    llama_cpp = pytest.importorskip("llama_cpp")
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    d, _ = written
    hf_tok = AutoTokenizer.from_pretrained(d)
    llm = llama_cpp.Llama(model_path=str(d / f"m-{qtype}.gguf"), n_ctx=512, logits_all=True, n_threads=1, verbose=False)
    ids = llm.tokenize(TEXT.encode(), add_bos=False, special=True)
    assert ids == hf_tok(TEXT).input_ids
    assert llm.metadata["tokenizer.chat_template"] == hf_tok.chat_template
    llm.eval(ids)
    got = torch.from_numpy(np.array(llm.scores[: len(ids)], dtype=np.float32))
    model = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
    with torch.no_grad():
        ref = model(torch.tensor([ids])).logits[0]
    top1 = (ref.argmax(-1) == got.argmax(-1)).float().mean().item()
    maxdiff = (ref - got).abs().max().item()
    print(f"llama.cpp {qtype}: top-1 agreement {top1:.4f}, max |Δlogit| {maxdiff:.4g}")
    assert top1 >= (0.99 if qtype == "f16" else 0.9)
    out = llm.create_chat_completion(messages=[{"role": "user", "content": "What is a prime number?"}], max_tokens=4,
                                     temperature=0.0)
    assert out["choices"][0]["message"]["role"] == "assistant"
