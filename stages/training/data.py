"""Token data for pretraining: memmapped shards from a ``tokenize`` output, read in a global order.

The training stream of a split is the concatenation of its shards. Sequence ``i`` is the window
``tokens[i*T : i*T + T + 1]`` (inputs and shifted labels). The order of sequences is a permutation
per epoch drawn from ``(seed, epoch)``; global batch ``b`` is positions ``b*B … b*B+B-1`` of that order
and rank ``r`` of ``W`` takes the contiguous slice ``r*B/W …``. Nothing depends on the world size
except the slice, so the cursor (sequences consumed) is global and a checkpoint resumes on any
number of ranks.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genesis_build.errors import GenesisError


@dataclass
class Split:
    """One split (train / validation) as a virtual concatenation of memmapped shards."""

    shards: list[np.memmap]
    offsets: np.ndarray  # start of each shard in the concatenated stream; last entry = total tokens

    @property
    def tokens(self) -> int:
        """Total tokens in the split."""
        return int(self.offsets[-1])

    def window(self, start: int, length: int) -> np.ndarray:
        """Tokens ``[start, start+length)`` of the stream, crossing shard borders as needed."""
        out = np.empty(length, dtype=np.int64)
        filled = 0
        shard = int(np.searchsorted(self.offsets, start, side="right") - 1)
        pos = start - int(self.offsets[shard])
        while filled < length:
            piece = self.shards[shard][pos : pos + length - filled]
            out[filled : filled + len(piece)] = piece
            filled += len(piece)
            shard, pos = shard + 1, 0
        return out


def load_meta(data_dir: Path) -> dict[str, Any]:
    """Read and sanity-check ``meta.json`` of a tokenize output."""
    path = data_dir / "meta.json"
    if not path.is_file():
        raise GenesisError(f"{path}: missing; the tokens input must be a tokenize output with meta.json")
    meta = json.loads(path.read_text())
    for key in ("dtype", "vocab_size", "splits"):
        if key not in meta:
            raise GenesisError(f"{path}: no '{key}' field")
    return meta


def open_split(data_dir: Path, meta: dict[str, Any], name: str) -> Split:
    """Memmap every shard of split ``name``."""
    split = meta["splits"].get(name)
    if split is None:
        raise GenesisError(f"{data_dir / 'meta.json'}: no '{name}' split (have {sorted(meta['splits'])})")
    dtype = np.dtype(meta["dtype"]).newbyteorder("<")
    shards, sizes = [], []
    for sh in split["shards"]:
        f = data_dir / sh["file"]
        if not f.is_file():
            raise GenesisError(f"{f}: shard listed in meta.json is missing")
        n = f.stat().st_size // dtype.itemsize
        if n != int(sh["tokens"]):
            raise GenesisError(f"{f}: holds {n} tokens but meta.json says {sh['tokens']}")
        if n:
            shards.append(np.memmap(f, dtype=dtype, mode="r", shape=(n,)))
            sizes.append(n)
    return Split(shards, np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)]).astype(np.int64))


class GlobalOrder:
    """Seed-determined order of sequence ids, independent of world size."""

    def __init__(self, num_sequences: int, seed: int) -> None:
        self.n = num_sequences
        self.seed = seed
        self._epoch: int | None = None
        self._perm: np.ndarray | None = None

    def sequence(self, position: int) -> int:
        """Sequence id at global position ``position`` (epochs reshuffle)."""
        epoch, i = divmod(position, self.n)
        if epoch != self._epoch:
            self._perm = np.random.default_rng([self.seed, epoch]).permutation(self.n)
            self._epoch = epoch
        return int(self._perm[i])  # type: ignore[index]


class PretrainData:
    """Batches of next-token prediction windows for one rank."""

    def __init__(self, data_dir: Path, context_length: int, global_batch_tokens: int, micro_batch_size: int,
                 seed: int, rank: int, world: int, eval_batches: int) -> None:
        self.meta = load_meta(data_dir)
        self.T = context_length
        self.B = global_batch_tokens // context_length  # sequences per global batch
        self.micro = micro_batch_size
        self.rank, self.world = rank, world
        if self.B % (world * micro_batch_size):
            raise GenesisError(
                f"global batch of {self.B} sequences ({global_batch_tokens} tokens / context {context_length}) is not "
                f"divisible by world size {world} × micro_batch_size {micro_batch_size}; change micro_batch_size in the "
                f"parallel spec or global_batch_tokens in the model spec")
        self.accum = self.B // (world * micro_batch_size)
        self.train = open_split(data_dir, self.meta, "train")
        n_train = (self.train.tokens - 1) // self.T
        if n_train < 1:
            raise GenesisError(f"{data_dir}: train split has {self.train.tokens} tokens, fewer than one sequence of {self.T + 1}")
        self.order = GlobalOrder(n_train, seed)
        self.validation = open_split(data_dir, self.meta, "validation") if "validation" in self.meta["splits"] else None
        self.eval_sequences = eval_batches * self.B

    @property
    def sequences_per_step(self) -> int:
        """How far one optimizer step moves the global cursor."""
        return self.B

    def _batch(self, split: Split, ids: list[int]) -> dict[str, torch.Tensor]:
        rows = np.stack([split.window(i * self.T, self.T + 1) for i in ids])
        t = torch.from_numpy(rows)
        return {"input_ids": t[:, :-1].contiguous(), "labels": t[:, 1:].contiguous()}

    def train_micro_batches(self, cursor: int) -> list[dict[str, torch.Tensor]]:
        """This rank's micro-batches of the global batch that starts at ``cursor``."""
        per_rank = self.B // self.world
        first = cursor + self.rank * per_rank
        ids = [self.order.sequence(first + j) for j in range(per_rank)]
        return [self._batch(self.train, ids[k : k + self.micro]) for k in range(0, per_rank, self.micro)]

    def eval_micro_batches(self) -> list[dict[str, torch.Tensor]]:
        """This rank's share of the fixed validation set.

        Every rank runs the same number of forwards (FSDP collectives must match); rows beyond the
        set are padding with labels -100 so they add nothing to the loss.
        """
        if self.validation is None:
            return []
        n_avail = (self.validation.tokens - 1) // self.T
        n = min(self.eval_sequences, n_avail)
        per_rank = -(-n // self.world)
        per_rank = -(-per_rank // self.micro) * self.micro
        ids = list(range(self.rank * per_rank, (self.rank + 1) * per_rank))
        out = []
        for k in range(0, per_rank, self.micro):
            chunk = ids[k : k + self.micro]
            b = self._batch(self.validation, [i if i < n else 0 for i in chunk])
            pad = torch.tensor([i >= n for i in chunk])
            b["labels"][pad] = -100
            out.append(b)
        return out
