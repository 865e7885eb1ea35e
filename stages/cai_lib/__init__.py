"""Constitutional AI library (Bai et al. 2022) used by the instruct, cai-*, sft, dpo and export-* stages.

Light (pydantic + stdlib + xxhash; safe to import from stage modules and spec validation):
  constitution  the ``constitution`` spec kind (principles keyed by id, templates validated)
  prompts       the ``prompts`` spec kind (builtin / local file / ``datasets`` id)
  sections      the model spec's ``[instruct]``, ``[cai]``, ``[sft]``, ``[dpo]`` sections
  roles         which model plays each CAI role (``self`` → instruct or base), role inputs
  estimate      the --dry-run ESTIMATE of CAI generation time (HF generate vs vLLM)
  templates     ``{placeholder}`` templates: validation and rendering
  assign        rendezvous hashing of principles onto prompts
  samples       per-sample cache (one atomic JSON file per sample)
  checks        cross-spec checks for the stages' ``check`` hooks
  io            JSONL helpers, run-time spec resolution
  critique      response → critique → revision planning and generation
  preferences   response pairs and multiple-choice AI feedback

Heavy (torch/transformers; imported only inside stage ``run`` functions):
  generators    ``self`` / ``hf:<dir>`` (transformers) and ``openai:<url>`` (HTTP) generators
  sft_data      chat template rendering with an assistant-only loss mask; DPO pair encoding
  dpo_loss      sequence log-probs and the sigmoid DPO loss
  train_tasks   SFT, instruct (with validation) and DPO tasks for the shared trainer (stages/training)
  finetune      launching the trainer and exporting DCP → HF (instruct, sft, dpo, the exports)
"""
