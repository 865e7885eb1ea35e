"""The exported HF directory loads with AutoModelForCausalLM / AutoTokenizer, reproduces the trained
model's logits and generates."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import training_testlib as t
from stages.training.config import TrainJob
from stages.training.export_hf import export_hf
from stages.training.model import llama_config

pytestmark = pytest.mark.slow


def _tokenizer(out: Path, vocab: int) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = {f"w{i}": i for i in range(vocab - 1)} | {"<|eos|>": vocab - 1}
    tok = Tokenizer(models.WordLevel(vocab=words, unk_token="<|eos|>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|eos|>", pad_token="<|eos|>").save_pretrained(str(out))


def test_export_roundtrip(tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    data = t.make_tokens(tmp_path / "tok")
    _tokenizer(data / "tokenizer", 257)
    job_path = t.make_job(tmp_path, data, tmp_path / "run", steps=6, arch={"tie_embeddings": True})
    rc, _ = t.run(job_path)
    assert rc == 0, t.log_text(job_path)
    job = TrainJob.read(job_path)
    cfg = llama_config(job.architecture, job.vocab_size, **job.special_ids)
    ckpt = t.final_checkpoint(tmp_path / "run")
    facts = export_hf(ckpt, cfg, tmp_path / "hf", tokenizer_dir=data / "tokenizer")
    assert {"model.safetensors", "config.json", "generation_config.json", "tokenizer.json"} <= {p.name for p in (tmp_path / "hf").iterdir()}
    assert facts["tokenizer_files"]

    # reference: the trained weights read straight from the DCP shards into a plain model
    state = {k[len("model."):]: v for k, v in t.read_dcp(ckpt).items() if k.startswith("model.")}
    ref = LlamaForCausalLM(cfg).eval()
    ref.load_state_dict(state, strict=True)
    exported = AutoModelForCausalLM.from_pretrained(str(tmp_path / "hf")).eval()
    ids = torch.randint(0, 256, (2, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(exported(ids).logits, ref(ids).logits, rtol=0, atol=0)
        untrained = LlamaForCausalLM(cfg).eval()(ids).logits
    assert not torch.allclose(untrained, ref(ids).logits)
    tok = AutoTokenizer.from_pretrained(str(tmp_path / "hf"))
    prompt = tok("w1 w2 w3 w4", return_tensors="pt")
    out = exported.generate(**prompt, max_new_tokens=5, do_sample=False)
    assert out.shape == (1, 9)
    assert exported.generation_config.eos_token_id == 256
