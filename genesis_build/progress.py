"""Live build display: one line per running node, a bar where the stage reports progress."""

from __future__ import annotations

import threading
import time
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn


class BuildUI:
    """Receives executor events (from several threads) and renders them with rich."""

    def __init__(self, console: Console, quiet: bool = False) -> None:
        self.console = console
        self.quiet = quiet
        self._lock = threading.Lock()
        self._tasks: dict[str, Any] = {}
        self.bars = Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.fields[node]}[/]"),
            BarColumn(bar_width=30),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
            disable=quiet or not console.is_terminal,
        )

    def __enter__(self) -> "BuildUI":
        self.bars.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.bars.stop()

    def started(self, node: str, key: str) -> None:
        """A node started running."""
        with self._lock:
            self._tasks[node] = self.bars.add_task("", node=node, info=f"key {key[:10]}", total=None)
        if not self.console.is_terminal and not self.quiet:
            self.console.print(f"▶ {node} running (key {key[:12]})")

    def progress(self, msg: dict[str, Any]) -> None:
        """A progress report from a running stage."""
        with self._lock:
            task = self._tasks.get(msg.get("node", ""))
            if task is None:
                return
            info = msg.get("desc") or ""
            extra = {k: v for k, v in msg.items() if k not in ("node", "done", "total", "desc", "t")}
            if extra:
                info += " " + " ".join(f"{k}={_fmt(v)}" for k, v in extra.items())
            self.bars.update(task, completed=msg.get("done") or 0, total=msg.get("total"), info=escape(info.strip()))

    def finished(self, res: Any) -> None:
        """A node finished (built, cached, failed or skipped)."""
        with self._lock:
            task = self._tasks.pop(res.id, None)
            if task is not None:
                self.bars.remove_task(task)
        if self.quiet and res.outcome != "failed":
            return
        style = {"built": "green", "cached": "dim", "pulled": "cyan", "failed": "red", "skipped": "yellow"}[res.outcome]
        mark = {"built": "✓", "cached": "·", "pulled": "⇣", "failed": "✗", "skipped": "-"}[res.outcome]
        line = f"[{style}]{mark} {res.id}[/] {res.outcome}"
        if res.outcome in ("built", "pulled"):
            line += f" in {res.seconds:.1f}s"
        if getattr(res, "summary", None):  # the stage's ``summary`` stat: what this build did, in its words
            line += f": {escape(res.summary)}"
        if res.error:
            line += f": {escape(str(res.error))}"
        self.console.print(line, highlight=False, soft_wrap=True)

    def warn(self, message: str) -> None:
        """A warning that must not be missed."""
        self.console.print(f"[yellow]warning:[/] {escape(message)}", highlight=False)

    def note(self, message: str) -> None:
        """Something the user should know about what the build does (not a problem)."""
        if not self.quiet:
            self.console.print(f"[cyan]note:[/] {escape(message)}", highlight=False)

    def waiting(self, node: str, info: dict[str, Any]) -> None:
        """Another builder holds this node's lock."""
        who = f"{info.get('host', '?')} pid {info.get('pid', '?')}" if info else "another builder"
        since = f" since {time.strftime('%H:%M:%S', time.localtime(info['since']))}" if info.get("since") else ""
        self.console.print(f"[cyan]waiting:[/] {node} is being built by {who}{since}", highlight=False)

    def transfer(self, node: str, done: int, total: int) -> None:
        """Remote cache transfer progress (bytes)."""
        self.progress({"node": node, "done": done, "total": total, "desc": "transfer"})


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)
