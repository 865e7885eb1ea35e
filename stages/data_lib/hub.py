"""Hub sources at plan time: pin a revision to its commit, check access, read the dataset's size.

One ``HfApi().dataset_info(dataset, revision=…, files_metadata=True)`` per hub source gives all three:
``.sha`` (the commit a branch name points at now: it goes into the node's key, so a moved branch is a
new key, never a stale cache hit), ``.gated`` (then ``auth_check`` says whether this machine's token
has been granted access) and the sizes (the dataset card's ``dataset_info`` split sizes, else the
sizes of the files the config's ``data_files`` name).

The sources of a corpus are asked together, in daemon threads, each call bounded by
``GENESIS_HUB_TIMEOUT`` seconds (default 5): twelve sources cost one round trip, an unreachable hub
costs at most one timeout and never blocks the process's exit. Answers are memoised per process,
so the hooks of the 12 ``corpus-source`` nodes, the mixture's planner rows and the build's
preflight ask once. ``HF_HUB_OFFLINE=1`` asks nothing: a 40-hex revision is pinned as written, a
branch name stays unpinned (a ``--dry-run`` plans, a build refuses).

``huggingface_hub`` is imported only when a hub id must be asked (not for local stages, not offline).
"""

from __future__ import annotations

import fnmatch
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

HEX40 = re.compile(r"[0-9a-f]{40}")
DEFAULT_TIMEOUT_S = 5.0  # per call; the hub answers dataset_info in well under a second when reachable
_TRUE = {"1", "on", "yes", "true"}


@dataclass(frozen=True)
class HubInfo:
    """What the hub said about one source (or why it could not say)."""

    dataset: str
    revision: str  # as the spec names it ("main" when unset)
    sha: str | None  # the commit; None: unpinned
    problem: str | None = None  # one line: why it is unpinned or unusable
    fatal: bool = False  # the problem blocks a build even with a sha (missing dataset, revision, no access)
    bytes: int | None = None  # size of the source's split, if the hub says
    documents: int | None = None
    size_from: str = ""  # "dataset card" | "file sizes"


_MEMO: dict[tuple[Any, ...], HubInfo] = {}
_LOCK = threading.Lock()


def offline() -> bool:
    """``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) is set, read now: huggingface_hub reads it once at
    import, and a test or a caller may set it later."""
    return (os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or "").strip().lower() in _TRUE


def endpoint() -> str:
    """The hub URL calls go to (``HF_ENDPOINT``, read now)."""
    return (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")


def timeout_s() -> float:
    """Seconds one hub call may take (``GENESIS_HUB_TIMEOUT``)."""
    try:
        return max(0.1, float(os.environ.get("GENESIS_HUB_TIMEOUT", DEFAULT_TIMEOUT_S)))
    except ValueError:
        return DEFAULT_TIMEOUT_S


def is_hub_id(src: Any, workspace: Path) -> bool:
    """A ``type = "hub"`` source naming a hub repository (not a local dataset directory or script)."""
    if src.type != "hub" or not src.dataset:
        return False
    p = Path(os.path.expanduser(src.dataset))
    return not (p if p.is_absolute() else workspace / p).exists()


def _memo_key(src: Any) -> tuple[Any, ...]:
    # the token matters: a login between two calls of one process changes what a gated repo answers
    return (endpoint(), src.dataset, src.config, src.data_dir, src.split, src.revision or "main",
            bool(os.environ.get("HF_TOKEN")), offline())


def resolve(sources: Iterable[Any], workspace: Path) -> dict[str, HubInfo]:
    """``HubInfo`` of every hub source by name (asked together, memoised per process)."""
    hub = [s for s in sources if is_hub_id(s, workspace)]
    with _LOCK:
        todo = [s for s in hub if _memo_key(s) not in _MEMO]
        if todo:
            for s, info in zip(todo, _ask_all(todo)):
                _MEMO[_memo_key(s)] = info
        return {s.name: _MEMO[_memo_key(s)] for s in hub}


def _ask_all(sources: list[Any]) -> list[HubInfo]:
    if offline():
        return [_unasked(s, "offline (HF_HUB_OFFLINE is set)") for s in sources]
    limit = timeout_s()
    results: list[HubInfo | None] = [None] * len(sources)

    def work(i: int) -> None:
        try:
            results[i] = _ask(sources[i], limit)
        except Exception as e:  # noqa: BLE001 — any failure to reach the hub only leaves the source unpinned
            results[i] = _unasked(sources[i], f"the hub at {endpoint()} is unreachable ({type(e).__name__})")

    # daemon threads, not a pool: a hung connection must neither block planning past the timeout nor
    # keep the process alive at exit (a ThreadPoolExecutor joins its threads then)
    threads = [threading.Thread(target=work, args=(i,), daemon=True, name=f"hub-{i}") for i in range(len(sources))]
    for t in threads:
        t.start()
    import time

    deadline = time.monotonic() + 2 * limit + 1  # dataset_info, then auth_check for a gated one
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    return [r if r is not None else _unasked(s, f"the hub at {endpoint()} did not answer within {limit:g} s")
            for s, r in zip(sources, results)]


def _unasked(src: Any, why: str) -> HubInfo:
    rev = src.revision or "main"
    if HEX40.fullmatch(rev):  # already a commit: pinned without asking
        return HubInfo(src.dataset, rev, rev)
    return HubInfo(src.dataset, rev, None, why)


def _ask(src: Any, limit: float) -> HubInfo:
    """One source: dataset_info at the revision (sha, gated, sizes), auth_check when gated."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

    rev = src.revision or "main"
    api = HfApi(endpoint=endpoint())
    page = f"{endpoint()}/datasets/{src.dataset}"
    gated_msg = (f"{src.dataset} is gated and this machine has no access: accept its terms on {page}, then "
                 "`huggingface-cli login` / `hf auth login` (or set HF_TOKEN)")
    try:
        info = api.dataset_info(src.dataset, revision=rev, files_metadata=True, timeout=limit)
        if info.gated and hasattr(api, "auth_check"):  # auth_check: huggingface_hub >= 0.26
            api.auth_check(src.dataset, repo_type="dataset")
    except GatedRepoError:
        return HubInfo(src.dataset, rev, None, gated_msg, fatal=True)
    except RevisionNotFoundError:
        return HubInfo(src.dataset, rev, None, f"{src.dataset} has no revision {rev!r} ({page})", fatal=True)
    except RepositoryNotFoundError:
        return HubInfo(src.dataset, rev, None, f"dataset {src.dataset} does not exist on {endpoint()} (or is private: "
                       "`huggingface-cli login` or set HF_TOKEN)", fatal=True)
    except HfHubHTTPError as e:
        code = getattr(getattr(e, "response", None), "status_code", "?")
        return _unasked(src, f"the hub answered HTTP {code}")
    docs, size, origin = _sizes(info, src)
    return HubInfo(src.dataset, rev, info.sha, None, False, size, docs, origin)


def _card(info: Any, key: str) -> Any:
    card = getattr(info, "card_data", None)
    if card is None:
        return None
    try:
        return card.get(key)
    except AttributeError:
        return None


def _sizes(info: Any, src: Any) -> tuple[int | None, int | None, str]:
    """(documents, bytes, where from) of the source's config and split."""
    config = src.config or "default"
    di = _card(info, "dataset_info")
    for entry in di if isinstance(di, list) else [di] if isinstance(di, dict) else []:
        if isinstance(entry, dict) and (entry.get("config_name") or "default") == config:
            for sp in entry.get("splits") or []:
                if isinstance(sp, dict) and sp.get("name") == src.split and sp.get("num_bytes"):
                    return sp.get("num_examples"), int(sp["num_bytes"]), "dataset card"
    patterns = _data_patterns(_card(info, "configs"), config, src.split)
    if src.data_dir:
        patterns = [f"{src.data_dir.strip('/')}/*"]
    files = [s for s in (getattr(info, "siblings", None) or []) if s.size is not None]
    if patterns:
        total = sum(s.size for s in files if any(fnmatch.fnmatch(s.rfilename, p) for p in patterns))
        if total:
            return None, total, "file sizes"
    return None, None, ""


def _data_patterns(configs: Any, config: str, split: str) -> list[str]:
    """The ``data_files`` globs of ``config``'s ``split`` in the card's ``configs`` list."""
    for c in configs if isinstance(configs, list) else []:
        if not isinstance(c, dict) or c.get("config_name", "default") != config:
            continue
        df = c.get("data_files")
        if isinstance(df, str):
            return [df]
        out: list[str] = []
        for item in df if isinstance(df, list) else []:
            if isinstance(item, str):
                out.append(item)
            elif isinstance(item, dict) and item.get("split", "train") == split:
                p = item.get("path")
                out += [p] if isinstance(p, str) else list(p or [])
        return out
    return []


def clear_memo() -> None:
    """Forget every answer (tests; a long-lived process that must ask again)."""
    with _LOCK:
        _MEMO.clear()
