"""Suite items from a local file, a Hugging Face dataset id, or the built-in sets (stdlib only
unless a dataset id is used).

Every loader returns ``(items, source)``: ``items`` are plain dicts in a normalised layout (below),
``source`` says where they came from (``kind`` = path / dataset / builtin, plus the path or id and
the number of rows before filtering) and ends up in the results' ``config``.

Normalised layouts:

* truthfulqa: ``{"id", "question", "mc1": {"choices", "labels"}, "mc2": {"choices", "labels"}}``
* harmbench: ``{"id", "behavior", "functional_category", "semantic_category", "context", "tags"}``
* xstest: ``{"id", "prompt", "type", "label" ("safe"|"unsafe"), "focus", "note"}``
* engagement: ``{"id", "prompt", "kind" ("open"|"underspecified"|"must_refuse")}``
"""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path
from typing import Any, Iterable

from genesis_build.errors import GenesisError

BUILTIN_DIR = Path(__file__).resolve().parent / "builtin"
BUILTIN_FILES = {
    "truthfulqa": "truthfulqa_mc.jsonl",
    "harmbench": "harmbench_behaviors.jsonl",
    "xstest": "xstest_prompts.jsonl",
    "engagement": "engagement_prompts.jsonl",
}
BUILTIN_NOTE = "built-in set written for genesis-build (not the benchmark; numbers are smoke tests)"
ENGAGEMENT_KINDS = ("open", "underspecified", "must_refuse")


def builtin_path(suite: str) -> Path:
    """The built-in items file of a suite."""
    return BUILTIN_DIR / BUILTIN_FILES[suite]


def builtin_digest(suite: str) -> str:
    """sha256 of a built-in set: put into the ``eval-data`` key so editing the set rebuilds it."""
    return hashlib.sha256(builtin_path(suite).read_bytes()).hexdigest()


def source_kind(cfg: Any) -> str:
    """``path``, ``dataset`` or ``builtin`` for a suite config."""
    return "path" if cfg.path else "dataset" if cfg.dataset else "builtin"


# --------------------------------------------------------------------------------------------
# raw rows


def read_rows(path: Path) -> list[dict[str, Any]]:
    """Rows of a .csv (header row), .json (a list of objects) or .jsonl file."""
    if not path.is_file():
        raise GenesisError(f"{path}: no such file")
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            # utf-8-sig: TruthfulQA.csv has a BOM; newline="" keeps HarmBench's embedded newlines intact
            with open(path, newline="", encoding="utf-8-sig") as f:
                return [dict(r) for r in csv.DictReader(f)]
        if suffix == ".jsonl":
            rows = []
            for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except ValueError as e:
                        raise GenesisError(f"{path}:{i}: not valid JSON ({e})") from None
            return rows
        if suffix == ".json":
            data = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(data, list):
                raise GenesisError(f"{path}: expected a JSON list of objects")
            return data
    except (UnicodeDecodeError, csv.Error, ValueError) as e:
        raise GenesisError(f"{path}: cannot read ({e})") from None
    raise GenesisError(f"{path}: unsupported file type {suffix or '(none)'}; use .csv, .json or .jsonl")


def dataset_rows(cfg: Any, default_config: str | None = None, default_split: str | None = None) -> list[dict[str, Any]]:
    """Rows of ``cfg.dataset`` via ``datasets.load_dataset`` (network or a warm HF cache)."""
    import datasets

    name = cfg.dataset_config or default_config
    split = cfg.split or default_split or "train"
    try:
        ds = datasets.load_dataset(cfg.dataset, name, split=split, revision=cfg.revision)
    except Exception as e:  # datasets raises many types (ConnectionError, DatasetNotFoundError, …)
        raise GenesisError(f"dataset {cfg.dataset!r} (config {name!r}, split {split!r}) could not be loaded: "
                           f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
    return [dict(r) for r in ds]


def _rows(suite: str, cfg: Any, path: Path | None, default_config: str | None = None,
          default_split: str | None = None) -> tuple[list[dict[str, Any]], dict[str, Any], str]:
    kind = source_kind(cfg)
    if kind == "path":
        if path is None:
            raise GenesisError(f"{suite}: path {cfg.path} was not resolved")
        rows = read_rows(path)
        source = {"kind": "path", "path": cfg.path, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
        where = str(cfg.path)
    elif kind == "dataset":
        rows = dataset_rows(cfg, default_config, default_split)
        source = {"kind": "dataset", "dataset": cfg.dataset, "config": cfg.dataset_config or default_config,
                  "split": cfg.split or default_split, "revision": cfg.revision}
        where = f"dataset {cfg.dataset}"
    else:
        rows = read_rows(builtin_path(suite))
        source = {"kind": "builtin", "file": BUILTIN_FILES[suite], "sha256": builtin_digest(suite), "note": BUILTIN_NOTE}
        where = f"built-in {BUILTIN_FILES[suite]}"
    source["rows"] = len(rows)
    return rows, source, where


def _need(row: dict[str, Any], keys: Iterable[str], where: str, i: int) -> None:
    missing = [k for k in keys if k not in row]
    if missing:
        raise GenesisError(f"{where}: row {i} lacks {', '.join(missing)} (has: {', '.join(map(str, row)) or 'nothing'})")


def _limit(items: list[dict[str, Any]], cfg: Any) -> list[dict[str, Any]]:
    return items[: cfg.limit] if cfg.limit else items


# --------------------------------------------------------------------------------------------
# per suite


def _targets(value: Any, where: str, i: int, name: str) -> dict[str, list]:
    """``{answer: label}`` (upstream mc_task.json, order kept) or ``{"choices", "labels"}``."""
    if isinstance(value, dict) and "choices" in value and "labels" in value:
        choices, labels = list(value["choices"]), [int(x) for x in value["labels"]]
    elif isinstance(value, dict):
        choices, labels = list(value.keys()), [int(x) for x in value.values()]
    else:
        raise GenesisError(f"{where}: row {i}: {name} must be {{answer: 0|1}} or {{\"choices\": [...], \"labels\": [...]}}")
    if len(choices) != len(labels) or len(choices) < 2 or not all(isinstance(c, str) for c in choices):
        raise GenesisError(f"{where}: row {i}: {name} needs at least two text choices with one label each")
    return {"choices": choices, "labels": labels}


def load_truthfulqa(cfg: Any, path: Path | None = None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """TruthfulQA MC items (mc1 must have exactly one true answer, mc2 at least one)."""
    rows, source, where = _rows("truthfulqa", cfg, path, "multiple_choice", "validation")
    items = []
    for i, r in enumerate(rows):
        _need(r, ("question", "mc1_targets", "mc2_targets"), where, i)
        mc1 = _targets(r["mc1_targets"], where, i, "mc1_targets")
        mc2 = _targets(r["mc2_targets"], where, i, "mc2_targets")
        if sum(mc1["labels"]) != 1:
            raise GenesisError(f"{where}: row {i}: mc1_targets must have exactly one true answer")
        if not any(mc2["labels"]):
            raise GenesisError(f"{where}: row {i}: mc2_targets has no true answer")
        items.append({"id": str(r.get("id", i)), "question": r["question"], "mc1": mc1, "mc2": mc2})
    return _limit(items, cfg), source


HARMBENCH_COLUMNS = ("Behavior", "FunctionalCategory", "SemanticCategory", "BehaviorID")


def load_harmbench(cfg: Any, path: Path | None = None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """HarmBench behaviors of the configured functional categories."""
    rows, source, where = _rows("harmbench", cfg, path, None, "train")
    items = []
    for i, r in enumerate(rows):
        _need(r, HARMBENCH_COLUMNS, where, i)
        if r["FunctionalCategory"] not in cfg.functional_categories:
            continue
        items.append({"id": r["BehaviorID"], "behavior": r["Behavior"], "functional_category": r["FunctionalCategory"],
                      "semantic_category": r["SemanticCategory"], "context": r.get("ContextString") or "",
                      "tags": [t.strip() for t in (r.get("Tags") or "").split(",") if t.strip()]})
    if not items:
        raise GenesisError(f"{where}: no behavior has a FunctionalCategory in {cfg.functional_categories}")
    source["functional_categories"] = list(cfg.functional_categories)
    return _limit(items, cfg), source


def load_xstest(cfg: Any, path: Path | None = None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """XSTest prompts; ``label`` is ``safe`` (should be answered) or ``unsafe`` (should be refused)."""
    rows, source, where = _rows("xstest", cfg, path, None, "test")
    items = []
    for i, r in enumerate(rows):
        _need(r, ("prompt", "type", "label"), where, i)
        label = str(r["label"]).strip().lower()
        if label not in ("safe", "unsafe"):
            raise GenesisError(f"{where}: row {i}: label must be safe or unsafe, got {r['label']!r}")
        items.append({"id": str(r.get("id", i)), "prompt": r["prompt"], "type": r["type"], "label": label,
                      "focus": r.get("focus") or "", "note": r.get("note") or ""})
    return _limit(items, cfg), source


def load_engagement(cfg: Any, path: Path | None = None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Engagement prompts with their kind."""
    rows, source, where = _rows("engagement", cfg, path)
    items = []
    for i, r in enumerate(rows):
        _need(r, ("prompt", "kind"), where, i)
        if r["kind"] not in ENGAGEMENT_KINDS:
            raise GenesisError(f"{where}: row {i}: kind must be one of {', '.join(ENGAGEMENT_KINDS)}, got {r['kind']!r}")
        items.append({"id": str(r.get("id", i)), "prompt": r["prompt"], "kind": r["kind"]})
    return _limit(items, cfg), source


LOADERS = {"truthfulqa": load_truthfulqa, "harmbench": load_harmbench, "xstest": load_xstest, "engagement": load_engagement}


def load_suite(suite: str, cfg: Any, path: Path | None = None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Items and source info of one suite."""
    items, source = LOADERS[suite](cfg, path)
    source["items"] = len(items)
    return items, source
