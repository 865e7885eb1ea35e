"""The job description the launching stage hands to every rank (``job.json``).

Each component gets only its slice: the model builder sees ``architecture``, the optimizer and
schedule see ``training``, sharding sees ``parallel``, the task sees its data dir and options.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from stages.model_spec import Architecture, Training
from stages.parallel_spec import ParallelSpec


class TrainJob(BaseModel):
    """Everything one training run needs; written by the stage, read by ``train.main``."""

    model_config = ConfigDict(extra="forbid")

    architecture: Architecture
    training: Training
    parallel: ParallelSpec
    data_dir: str  # the task's input (for pretraining: a tokenize output with meta.json)
    run_dir: str  # checkpoints/, metrics.jsonl, tb/, result.json live here
    vocab_size: int
    special_ids: dict[str, int | None] = {}  # bos_id / eos_id / pad_id for the HF config
    task: str = "stages.training.tasks:PretrainTask"  # "module:Class" implementing the Task protocol
    task_options: dict[str, Any] = {}
    init_checkpoint: str | None = None  # fresh runs start from this DCP dir's model state (SFT/DPO)
    reset_optimizer: bool = False  # resume weights + schedule but start the optimizer state fresh
    progress_file: str | None = None  # rank 0 appends JSON progress lines here
    save_checkpoints: bool = True  # False: `genesis-build probe` measures throughput and writes no checkpoint

    def write(self, path: Path) -> None:
        """Serialise to ``path`` (atomically: other nodes may read it as soon as it exists)."""
        import os

        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(self.model_dump(mode="json"), indent=1))
        os.replace(tmp, path)

    @classmethod
    def read(cls, path: Path) -> "TrainJob":
        """Parse a job file."""
        return cls.model_validate(json.loads(Path(path).read_text()))
