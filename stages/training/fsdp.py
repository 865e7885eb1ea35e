"""Process group setup and FSDP2 sharding (``fully_shard`` per decoder layer, then the root)."""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from .model import DTYPES


@dataclass
class Dist:
    """This process's place in the job."""

    rank: int
    world: int
    local_rank: int
    device: torch.device
    mesh: Any
    cpu_group: Any  # a gloo group for small CPU collectives of the main thread (stop flag, objects)
    ckpt_group: Any  # a gloo group used only by checkpoint saves/loads (async saves run in a thread)


def init(backend: str = "auto", timeout_s: int = 1800) -> Dist:
    """Initialise the default process group from the torchrun/SLURM environment.

    On CUDA the default group is ``cpu:gloo,cuda:nccl`` so async checkpointing (which needs a CPU
    backend) works; a separate gloo group carries checkpoint coordination so background saves never
    interleave with the training collectives.
    """
    _slurm_env()
    rank = int(os.environ.get("RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and backend in ("auto", "nccl")
    if backend == "nccl" and not torch.cuda.is_available():
        raise RuntimeError("parallel spec asks for backend = \"nccl\" but CUDA is not available; use \"gloo\" or \"auto\"")
    if use_cuda:
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
        pg_backend = "cpu:gloo,cuda:nccl"
    else:
        device = torch.device("cpu")
        pg_backend = "gloo"
    if not dist.is_initialized():
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", "29500")
        dist.init_process_group(pg_backend, rank=rank, world_size=world, timeout=datetime.timedelta(seconds=timeout_s))
    from torch.distributed.device_mesh import init_device_mesh

    mesh = init_device_mesh(device.type, (world,), mesh_dim_names=("dp",))
    cpu_group = dist.new_group(backend="gloo")
    ckpt_group = dist.new_group(backend="gloo")
    return Dist(rank, world, local_rank, device, mesh, cpu_group, ckpt_group)


def _slurm_env() -> None:
    """Map SLURM task variables to the torchrun ones when launched by ``srun`` directly."""
    if "RANK" not in os.environ and "SLURM_PROCID" in os.environ:
        os.environ["RANK"] = os.environ["SLURM_PROCID"]
        os.environ["WORLD_SIZE"] = os.environ.get("SLURM_NTASKS", "1")
        os.environ["LOCAL_RANK"] = os.environ.get("SLURM_LOCALID", "0")


def shard_model(model: torch.nn.Module, d: Dist, arch: Any, parallel: Any) -> torch.nn.Module:
    """Apply activation checkpointing and FSDP2 to an HF causal LM (in place)."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    if parallel.activation_checkpointing:
        # HF's implementation checkpoints each decoder layer without renaming parameters,
        # so checkpoints stay interchangeable with runs that do not checkpoint activations.
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    mp = parallel.mixed_precision
    param_dtype = DTYPES[arch.dtype if mp.param_dtype == "model" else mp.param_dtype]
    policy = MixedPrecisionPolicy(
        param_dtype=None if param_dtype == torch.float32 else param_dtype,
        reduce_dtype=None if param_dtype == torch.float32 and mp.reduce_dtype == "float32" else DTYPES[mp.reduce_dtype],
    )
    if d.world == 1 and policy.param_dtype is None and policy.reduce_dtype is None:
        # One rank and no mixed precision: FSDP2 has nothing to shard, reduce or cast, and its per-layer
        # copy-in/copy-out made the step ~7 % slower than the plain module (docs/pretraining-speed.md).
        # torchtitan likewise applies fully_shard only when the data-parallel shard degree is > 1. The
        # parameter names are the same either way, so DCP checkpoints stay interchangeable with sharded runs.
        return model
    layers = model.model.layers
    # one rank: resharding frees nothing (the shard is the whole tensor) but costs a second
    # all-gather copy per layer in backward; keep the parameters gathered
    reshard_all = parallel.reshard_after_forward and d.world > 1
    for i, layer in enumerate(layers):
        # the last layer's params are needed again right away in backward: keep them gathered
        reshard = reshard_all and i < len(layers) - 1
        fully_shard(layer, mesh=d.mesh, reshard_after_forward=reshard, mp_policy=policy)
    fully_shard(model, mesh=d.mesh, reshard_after_forward=reshard_all, mp_policy=policy)
    return model


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory of this rank: CUDA allocator peak, or the process's max RSS on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
