"""Built-in ML stages of genesis-build.

Importing this package registers every stage module in it (one stage per file). Stage modules
import torch/transformers only inside their ``run`` functions so that ``--dry-run`` stays fast.
"""

import importlib
import pkgutil

for _mod in pkgutil.iter_modules(__path__):
    if not _mod.ispkg and not _mod.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_mod.name}")
