"""The run-time :class:`~genesis_build.stage.Context` of a node, rebuilt from the executor's payload.

Lives below both the executor (which writes the payload) and the worker (which runs it in a
subprocess or in process), so neither imports the other for it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from .graph import Project
from .stage import Context, InputRef


def make_context(payload: dict[str, Any], project: Project, progress: Callable[[dict], None] | None = None) -> Context:
    """Rebuild a stage Context from a payload (in the worker or in process)."""
    if payload.get("overrides"):  # a --set variant: its specs exist only in memory, install them here too
        from .experiments import install_payload

        install_payload(project.specs, payload["overrides"])
    spec = project.specs.get(payload["spec"])
    inputs = {}
    for n, r in payload["inputs"].items():
        manifest = json.loads((Path(r["path"]).parent / "manifest.json").read_text())
        inputs[n] = InputRef(r["node"], Path(r["path"]), manifest)
    return Context(
        node=payload["node"], stage=payload["stage"], spec=spec.model, spec_name=spec.name, part=payload["part"],
        out=Path(payload["out"]), inputs=inputs, files=[Path(f) for f in payload["files"]],
        workspace=Path(payload["workspace"]), cache_root=Path(payload["cache_root"]), key=payload["key"],
        run_dir=Path(payload["run_dir"]) if payload["run_dir"] else None, options=payload["options"],
        progress_cb=progress, kind=spec.kind, resolver=project.resolve, external=payload.get("external") or {},
    )
