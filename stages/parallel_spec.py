"""The ``parallel`` spec kind: ``specs/parallel/<name>.toml`` — how a training run is executed.

Nothing here is part of any key (world size, sharding, micro-batching and activation checkpointing
do not change the math: DCP reshards and the data order is global). ``layout = "auto"`` lets the
machine choose ranks × threads × micro-batch (see ``stages.training.layout``). The pretrain stage's ``check``
hook verifies that the layout can realise the model's global batch. Multi-node: ``nnodes`` > 1 with
``rdzv_endpoint`` (torchrun on every node, see ``stages.training.launch``) or ``launcher = "slurm"``
with an optional ``[slurm]`` table (one ``sbatch --wait`` job, see ``stages.training.slurm``).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from genesis_build.stage import register_kind


class MixedPrecision(BaseModel):
    """FSDP2 ``MixedPrecisionPolicy``: compute and gradient-reduction dtypes."""

    model_config = ConfigDict(extra="forbid")

    param_dtype: Literal["model", "float32", "bfloat16", "float16"] = "model"  # "model": architecture.dtype
    reduce_dtype: Literal["float32", "bfloat16"] = "float32"


class SbatchOptions(BaseModel):
    """The sbatch options every genesis-build SLURM job takes (the pretrain job's ``[slurm]`` table
    and a corpus's ``[slurm]`` table for its shard array both extend this)."""

    model_config = ConfigDict(extra="forbid")

    partition: str | None = None  # #SBATCH --partition
    account: str | None = None  # #SBATCH --account
    time: str | None = None  # #SBATCH --time, e.g. "2-00:00:00"
    cpus_per_task: int | None = Field(default=None, gt=0)  # #SBATCH --cpus-per-task
    extra: list[str] = []  # more sbatch options, one a line, e.g. ["--qos=high", "--exclusive"]

    @field_validator("extra")
    @classmethod
    def _extra(cls, v: list[str]) -> list[str]:
        for opt in v:
            if not opt.startswith("-") or "\n" in opt:
                raise ValueError(f"extra sbatch option {opt!r} must be one option starting with '-', e.g. \"--qos=high\"")
        return v


class SlurmOptions(SbatchOptions):
    """``[slurm]``: the sbatch script the pretrain stage submits when ``launcher = "slurm"``.

    The job gets ``--nodes = nnodes``, one task per node (each task is one torchrun agent that
    starts ``nproc_per_node`` ranks) and ``--gpus-per-node = nproc_per_node`` unless set here.
    ``cpus_per_task``: CPUs for each node's torchrun and its ranks.
    """

    gpus_per_node: int | None = Field(default=None, ge=0)  # default: nproc_per_node; 0 = request no GPUs
    rdzv_port: int = Field(default=29500, gt=0, lt=65536)  # c10d rendezvous port on the job's first node
    stop_before_timeout_s: int = Field(default=300, gt=0)  # with `time`: SIGTERM (→ checkpoint) this long before the limit


class ParallelSpec(BaseModel):
    """``specs/parallel/<name>.toml``."""

    model_config = ConfigDict(extra="forbid")

    launcher: Literal["torchrun", "slurm"] = "torchrun"
    # "auto" (one node, gloo): ranks × threads × micro-batch chosen for the machine, measured by
    # `genesis-build probe` (stages.training.layout); "given": the fields below as written
    layout: Literal["given", "auto"] = "given"
    threads_per_rank: int | None = Field(default=None, gt=0)  # OMP threads per rank; default CPUs / ranks
    nproc_per_node: int = Field(default=1, gt=0)
    nnodes: int = Field(default=1, gt=0)
    backend: Literal["auto", "gloo", "nccl"] = "auto"  # auto: nccl when CUDA is available, else gloo
    micro_batch_size: int = Field(default=1, gt=0)  # sequences per rank per forward/backward
    reshard_after_forward: bool = True  # FSDP2: free gathered params after forward (ZeRO-3) or keep (ZeRO-2)
    activation_checkpointing: bool = False
    mixed_precision: MixedPrecision = MixedPrecision()
    async_checkpoint: bool = True  # dcp.async_save: training continues while shards are written
    env: dict[str, str] = {}  # extra environment for every rank, e.g. NCCL_P2P_DISABLE = "1"
    # multi-node torchrun: "host:port" of node 0, where its build serves the c10d rendezvous
    rdzv_endpoint: str | None = Field(default=None, validate_default=True)
    slurm: SlurmOptions = SlurmOptions()  # launcher = "slurm": sbatch options
    # Planner inputs (optional): a measured throughput beats a guessed one.
    tokens_per_second: float | None = Field(default=None, gt=0)  # measured, whole job
    peak_tflops_per_device: float | None = Field(default=None, gt=0)  # given peak, for MFU and ETA guesses
    mfu_guess: float = Field(default=0.35, gt=0, le=1)  # assumed MFU when only the peak is known
    device_memory_gib: float | None = Field(default=None, gt=0)  # per device, for the planner's fit check
    memory_bandwidth_gb_s: float | None = Field(default=None, gt=0)  # per device, for the CAI generation estimate

    @field_validator("env")
    @classmethod
    def _env(cls, v: dict[str, str]) -> dict[str, str]:
        for k in v:
            if not k.replace("_", "").isalnum() or k[0].isdigit():
                raise ValueError(f"env key {k!r} is not a valid environment variable name")
        return {k: str(val) for k, val in v.items()}

    @field_validator("rdzv_endpoint")
    @classmethod
    def _endpoint(cls, v: str | None, info: ValidationInfo) -> str | None:
        if v is None:
            nnodes = info.data.get("nnodes", 1)
            if info.data.get("launcher") == "torchrun" and nnodes > 1:
                raise ValueError(f"nnodes = {nnodes} with launcher = \"torchrun\" needs rdzv_endpoint = \"host:port\" "
                                 f"(node 0's address, where the c10d rendezvous runs)")
            return v
        host, sep, port = v.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"rdzv_endpoint must be \"host:port\" (node 0's address and a free port), got {v!r}")
        return v

    @property
    def world_size(self) -> int:
        """Total ranks."""
        return self.nproc_per_node * self.nnodes


register_kind("parallel", ParallelSpec)
