"""The shared trainer used by pretrain (and SFT/DPO): FSDP2 + DCP + torchrun.

Modules: ``config`` (the job file), ``model`` (HF Llama from a spec), ``fsdp`` (process groups,
sharding), ``data`` (memmapped token shards in a global order), ``tasks`` (pluggable batch/loss),
``schedule`` (WSD/cosine, resume choice), ``checkpoint`` (DCP save/strict restore), ``metrics``,
``train`` (the loop; torchrun entry point), ``launch`` (torchrun subprocess; multi-node join),
``slurm`` (the sbatch path), ``probe`` (``genesis-build probe``: measured tokens/s), ``export_hf``
(DCP → HF dir) and ``planner`` (pure Python, for ``--dry-run``).

This package file imports nothing, so ``stages.training.planner`` stays torch-free.
"""
