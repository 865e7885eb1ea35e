"""Built-in ML stages of genesis-build.

Importing this package registers every module in it. One file per stage or spec kind: each module
``stages/<file>.py`` registers exactly one stage, named ``<file>`` with ``-`` for ``_``
(``export_aligned.py`` → ``export-aligned``), or one spec kind, named ``<file>`` or ``<file>`` minus
``_spec`` (``model_spec.py`` → ``model``), or a kind and the stage of the same name (``tokenizer.py``,
``corpus.py``, ``prompts.py``). A stage's file may also register the CLI commands that work on its
outputs (``export.py``: ``serve``, ``chat``; ``pretrain.py``: ``probe``). Shared code lives in the
sub-packages (``data_lib``, ``cai_lib``, ``evals_lib``, ``training``, ``serving``), which register
nothing. ``tests/test_stage_files.py`` checks this against the registry.

Stage modules import torch/transformers only inside their ``run`` functions so that ``--dry-run``
stays fast.
"""

import importlib
import pkgutil

for _mod in pkgutil.iter_modules(__path__):
    if not _mod.ispkg and not _mod.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_mod.name}")
