"""Sharded checkpoints with ``torch.distributed.checkpoint`` (DCP).

Layout: ``<root>/step-N/`` holds the DCP shards, its ``.metadata`` (written last by DCP, atomically:
a checkpoint *counts only when .metadata exists*) and ``train_state.json`` (written by rank 0 before
the save, human-readable, used to choose a checkpoint without opening DCP). State names are fixed:
``model``, ``optimizer``, ``lr_scheduler``, ``train_state``. Every rank writes only its own shards;
no full state dict is ever gathered.

Restore is strict: every key this run expects must be in the checkpoint (and its shard file must be
there), else :class:`CheckpointError` names what is missing. ``reset_optimizer`` loads everything
except the optimizer state.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint._nested_dict import flatten_state_dict
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict, set_state_dict

STATE_NAMES = ("model", "optimizer", "lr_scheduler", "train_state")


class CheckpointError(RuntimeError):
    """A checkpoint cannot be restored as asked (the message says what to do)."""


def step_dir(root: Path, step: int) -> Path:
    """Directory of the checkpoint after ``step`` optimizer steps."""
    return root / f"step-{step}"


def complete_checkpoints(root: Path) -> dict[int, dict[str, Any]]:
    """Finished checkpoints: step → their ``train_state.json``."""
    out: dict[int, dict[str, Any]] = {}
    if not root.is_dir():
        return out
    for d in root.iterdir():
        if not d.name.startswith("step-") or not d.name[5:].isdigit():
            continue
        meta, ts = d / ".metadata", d / "train_state.json"
        if meta.is_file() and ts.is_file():
            try:
                out[int(d.name[5:])] = json.loads(ts.read_text())
            except ValueError:
                continue
    return out


def remove_incomplete(root: Path) -> list[str]:
    """Delete ``step-N`` dirs without ``.metadata`` (interrupted saves). Rank 0 only."""
    removed = []
    if root.is_dir():
        for d in root.iterdir():
            if d.name.startswith("step-") and not (d / ".metadata").is_file():
                shutil.rmtree(d, ignore_errors=True)
                removed.append(d.name)
    return removed


def app_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
              train_state: dict[str, Any]) -> dict[str, Any]:
    """The sharded state to save or load into (DTensor shards, no gathering)."""
    msd, osd = get_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=False))
    return {"model": msd, "optimizer": osd, "lr_scheduler": scheduler.state_dict(), "train_state": dict(train_state)}


def reproducible_writer(path: Path) -> Any:
    """A DCP ``FileSystemWriter`` whose ``.metadata`` holds no run metadata.

    The stock writer records ``StorageMeta(checkpoint_id=<absolute run dir>, save_id=<random uuid>)``
    in ``.metadata``; both differ between two builds of the same key (another cache root, another
    uuid), so a published checkpoint's bytes — and every key downstream — would never repeat. The
    loader does not need either (it fills in its own ``StorageMeta``)."""
    from torch.distributed.checkpoint import FileSystemWriter

    class _Writer(FileSystemWriter):
        def storage_meta(self) -> Any:
            return None

    return _Writer(str(path))


class Checkpointer:
    """Saves (optionally asynchronously), rotates and strictly restores checkpoints."""

    def __init__(self, root: Path, rank: int, cpu_group: Any, keep_last: int, async_save: bool) -> None:
        self.root = root
        self.rank = rank
        self.group = cpu_group
        self.keep_last = keep_last
        self.async_save = async_save
        self.pending: tuple[int, Future] | None = None
        self.save_seconds: list[float] = []  # time the training loop was blocked per save
        self.protect: set[int] = set()

    # ---- save
    def save(self, step: int, state: dict[str, Any], train_state_json: dict[str, Any], blocking: bool) -> None:
        """Write ``step-N`` (waits for any earlier async save first: one in flight at a time)."""
        self.wait()
        d = step_dir(self.root, step)
        t0 = time.perf_counter()
        if self.rank == 0:
            if d.exists():
                shutil.rmtree(d)  # a stale, incomplete attempt at the same step
            d.mkdir(parents=True)
            tmp = d / "train_state.json.tmp"
            tmp.write_text(json.dumps(train_state_json, indent=1))
            os.replace(tmp, d / "train_state.json")
        dist.barrier(group=self.group)
        if self.async_save and not blocking:
            fut = dcp.async_save(state, checkpoint_id=str(d), storage_writer=reproducible_writer(d),
                                  process_group=self.group)
            fut = getattr(fut, "upload_completion", fut)
            self.pending = (step, fut)
        else:
            dcp.save(state, checkpoint_id=str(d), storage_writer=reproducible_writer(d), process_group=self.group)
            self._finished(step)
        self.save_seconds.append(time.perf_counter() - t0)

    def poll(self) -> None:
        """Finish a completed async save (rotation happens then)."""
        if self.pending is not None and self.pending[1].done():
            self.wait()

    def wait(self) -> None:
        """Block until the in-flight async save is written."""
        if self.pending is not None:
            step, fut = self.pending
            self.pending = None
            fut.result()
            self._finished(step)

    def _finished(self, step: int) -> None:
        if self.rank == 0:
            self.rotate()

    def rotate(self) -> None:
        """Keep the newest ``keep_last`` complete checkpoints plus protected ones (rank 0)."""
        steps = sorted(complete_checkpoints(self.root))
        keep = set(steps[-self.keep_last :]) | (self.protect & set(steps))
        for s in steps:
            if s not in keep:
                shutil.rmtree(step_dir(self.root, s), ignore_errors=True)

    # ---- load
    def load(self, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
             train_state: dict[str, Any], reset_optimizer: bool = False) -> dict[str, Any]:
        """Restore ``step-N`` into model/optimizer/scheduler; returns the saved train_state."""
        d = step_dir(self.root, step)
        return load_into(d, model, optimizer, scheduler, train_state, reset_optimizer, self.group)


def _describe_missing(missing: list[str]) -> str:
    by_state: dict[str, int] = {}
    for k in missing:
        by_state[k.split(".", 1)[0]] = by_state.get(k.split(".", 1)[0], 0) + 1
    head = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
    return f"{', '.join(f'{n} {s} keys' for s, n in sorted(by_state.items()))} missing ({head})"


def check_complete(d: Path, expected: dict[str, Any]) -> None:
    """Raise CheckpointError unless every flattened key of ``expected`` (and its shard file) is in ``d``."""
    try:
        metadata = dcp.FileSystemReader(str(d)).read_metadata()
    except Exception as e:  # noqa: BLE001 — any unreadable metadata means an unusable checkpoint
        raise CheckpointError(f"{d}: cannot read DCP metadata ({type(e).__name__}: {e})") from e
    flat, _ = flatten_state_dict(expected)
    have = metadata.state_dict_metadata
    missing = [k for k in flat if k not in have]
    if missing:
        hint = ""
        if all(k.startswith("optimizer.") for k in missing):
            hint = ("; rerun with --reset-optimizer to restore the weights and schedule and start the optimizer "
                    "state fresh (recorded in the manifest)")
        raise CheckpointError(f"{d}: checkpoint is incomplete: {_describe_missing(missing)}{hint}")
    files: dict[str, int] = {}
    for idx, info in (metadata.storage_data or {}).items():
        if idx.fqn in flat:
            files[info.relative_path] = max(files.get(info.relative_path, 0), info.offset + info.length)
    for rel, size in sorted(files.items()):
        f = d / rel
        if not f.is_file():
            raise CheckpointError(f"{d}: shard file {rel} is missing (the checkpoint was damaged or partly deleted)")
        if f.stat().st_size < size:
            raise CheckpointError(f"{d}: shard file {rel} is truncated ({f.stat().st_size} < {size} bytes)")


def load_into(d: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
              train_state: dict[str, Any], reset_optimizer: bool, group: Any) -> dict[str, Any]:
    """Strictly load checkpoint dir ``d`` (see module docstring)."""
    state = app_state(model, optimizer, scheduler, train_state)
    if reset_optimizer:
        del state["optimizer"]
    check_complete(d, state)
    try:
        dcp.load(state, checkpoint_id=str(d), process_group=group)
    except Exception as e:  # noqa: BLE001 — surfaced with the checkpoint's path
        raise CheckpointError(f"{d}: loading failed: {type(e).__name__}: {e}") from e
    if reset_optimizer:
        from torch.distributed.checkpoint.state_dict import set_model_state_dict

        set_model_state_dict(model, state["model"], options=StateDictOptions(strict=True))
    else:
        set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"],
                       options=StateDictOptions(strict=True))
    sched_state = state["lr_scheduler"]
    expected_sched = scheduler.state_dict()
    if set(sched_state) != set(expected_sched):
        raise CheckpointError(f"{d}: lr_scheduler state has keys {sorted(sched_state)}, expected {sorted(expected_sched)}")
    scheduler.load_state_dict(sched_state)
    return state["train_state"]


def load_model_only(d: Path, model: torch.nn.Module, group: Any) -> None:
    """Initialise a (sharded) model from the ``model`` state of a checkpoint (e.g. SFT from pretrain)."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, set_model_state_dict

    msd = get_model_state_dict(model)
    state = {"model": msd}
    check_complete(d, state)
    dcp.load(state, checkpoint_id=str(d), process_group=group)
    set_model_state_dict(model, state["model"], options=StateDictOptions(strict=True))
