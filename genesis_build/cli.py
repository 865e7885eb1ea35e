"""``genesis-build`` command line.

Heavy modules (networkx, pydantic models, rich) are imported inside the commands that need them,
and torch never: ``--help`` and ``--dry-run`` stay fast.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from .commands import positive_int
from .errors import GenesisError

COMMANDS = ("why", "graph", "show", "cache", "init", "diff", "exp")  # plugins add more (genesis_build.stage.command)

EPILOG = """commands:
  genesis-build [TARGET…]            build targets (default: the workspace's default target)
  genesis-build release:M --push O/N build the release of model M and upload it to the Hub
  genesis-build why NODE             why NODE would run (what changed since its last build)
  genesis-build graph [TARGET]       the DAG as dot, mermaid or json
  genesis-build show NODE            a node's manifest and output path
  genesis-build diff A B             two builds side by side: changed spec values, nodes, metrics
  genesis-build exp                  every --set/--sweep variant built here, with its metrics
  genesis-build cache ls|du|verify|gc|push|pull
  genesis-build init [DIR]           write a starter workspace

commands of the built-in `stages` plugin (a workspace's plugins may add others):
  genesis-build serve TARGET         OpenAI-compatible server for an exported model
  genesis-build chat TARGET          terminal chat with an exported model
  genesis-build probe NODE           measure throughput for the planner

Targets are node ids (stage:name[/part], e.g. tokenize:tiny) or kind:name for a kind's default
stage (model:tiny). Run `genesis-build COMMAND --help` for a command's options.
Try a change without a spec file: `genesis-build --set model.training.lr=1e-3` (docs/trying-things.md)."""


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("-C", "--workspace", metavar="DIR", help="workspace directory (default: nearest genesis.toml)")
    p.add_argument("--cache", metavar="DIR", help="cache directory (overrides GENESIS_CACHE and genesis.toml)")


def _overrides(p: argparse.ArgumentParser, sweep: bool = False) -> None:
    p.add_argument("--set", action="append", default=[], metavar="KIND[:NAME].FIELD=VALUE", dest="set",
                   help="override a spec field (TOML value) in an ephemeral variant, e.g. model.training.lr=1e-3 (repeatable)")
    if sweep:
        p.add_argument("--sweep", action="append", default=[], metavar="KIND[:NAME].FIELD=V1,V2,…",
                       help="build one variant per value (the cartesian product of several --sweep)")
        p.add_argument("--save", metavar="NAME", help="also write the --set variant as specs/<kind>/NAME.toml (extends the base)")


def build_parser() -> argparse.ArgumentParser:
    """Parser of the default (build) command."""
    p = argparse.ArgumentParser(prog="genesis-build", description="Declarative, content-addressed build system for language models.",
                                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("targets", nargs="*", metavar="TARGET", help="what to build (default: genesis.toml's default)")
    p.add_argument("-n", "--dry-run", action="store_true", help="show the DAG, each node's state and why; run nothing")
    p.add_argument("--format", choices=("text", "json"), default="text", help="--dry-run output format")
    p.add_argument("-j", "--jobs", type=positive_int, default=1, metavar="N", help="run up to N independent nodes at once")
    p.add_argument("-w", "--workers", type=positive_int, metavar="N",
                   help="worker processes a sharded stage may use (corpus sources, tokenization); "
                        "default: the spec's `workers`, else all cores; in no key")
    p.add_argument("-k", "--keep-going", action="store_true", help="keep building independent nodes after a failure")
    p.add_argument("--force", action="append", default=[], metavar="NODE", help="rebuild NODE even if cached (repeatable)")
    p.add_argument("--reset-optimizer", action="store_true", help="resume training without optimizer state (recorded in the manifest)")
    p.add_argument("-q", "--quiet", action="store_true", help="print only failures and the summary")
    p.add_argument("--push", metavar="ORG/NAME", help="after building, upload the target (e.g. release:tiny) to this "
                   "Hugging Face repo (token from HF_TOKEN); never done without this option")
    _overrides(p, sweep=True)
    _common(p)
    return p


def command_parser(cmd: str) -> argparse.ArgumentParser:
    """Parser of a named command."""
    p = argparse.ArgumentParser(prog=f"genesis-build {cmd}")
    if cmd == "why":
        p.description = "Explain why NODE would run: every field, input and file that changed since its last build."
        p.add_argument("node")
        _overrides(p)
    elif cmd == "graph":
        p.description = "Print the build graph of TARGET."
        p.add_argument("targets", nargs="*", metavar="TARGET")
        p.add_argument("--format", choices=("dot", "mermaid", "json"), default="dot")
        _overrides(p)
    elif cmd == "diff":
        p.description = "Compare two builds (out/ entries, targets, --set variants or node ids): spec values, nodes, metrics."
        p.add_argument("a", metavar="A")
        p.add_argument("b", metavar="B")
        p.add_argument("--format", choices=("text", "json", "markdown"), default="text")
    elif cmd == "exp":
        p.description = "Every --set/--sweep variant built in this workspace: overrides, when, headline metrics."
        p.add_argument("--sort", metavar="METRIC", help="sort by a metric (full name or its last part, e.g. final_loss)")
        p.add_argument("--format", choices=("text", "json", "markdown"), default="text")
    elif cmd == "show":
        p.description = "Show a node's manifest and output path."
        p.add_argument("node")
    elif cmd == "cache":
        p.description = "Inspect and maintain the cache."
        sub = p.add_subparsers(dest="action", required=True)
        sub.add_parser("ls", help="list objects")
        sub.add_parser("du", help="disk usage by stage")
        v = sub.add_parser("verify", help="rehash every object; quarantine corrupted ones")
        v.add_argument("keys", nargs="*", help="only these keys (prefixes)")
        v.add_argument("--remote", action="store_true", help="verify the remote cache instead (downloads and rehashes every object)")
        v.add_argument("--repair", action="store_true", help="with --remote: re-upload a good local copy of a corrupt remote "
                       "object, or remove it so the next build rebuilds and pushes it")
        g = sub.add_parser("gc", help="delete objects no workspace refers to")
        g.add_argument("--all", action="store_true", help="delete every unreferenced object regardless of workspaces' refs")
        g.add_argument("--keep-days", type=float, default=0.0, help="keep objects younger than this")
        g.add_argument("-n", "--dry-run", action="store_true", help="list what would be deleted")
        for name in ("push", "pull"):
            r = sub.add_parser(name, help=f"{name} objects of TARGET to/from the remote cache")
            r.add_argument("targets", nargs="*", metavar="TARGET")
        for s in sub.choices.values():
            _common(s)
    elif cmd == "init":
        p.description = "Write a starter workspace (genesis.toml + specs) into DIR."
        p.add_argument("dir", nargs="?", default=".")
    if cmd != "cache":
        _common(p)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point: returns the exit code (0 ok, 1 build failed, 2 bad input, 130 interrupted)."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or (argv[0] not in COMMANDS and not _is_command_word(argv[0])):
        from .fastpath import try_noop

        rc = try_noop(argv)
        if rc is not None:
            return rc
    from rich.console import Console

    console = Console(stderr=False, highlight=False, emoji=False, soft_wrap=True)
    err = Console(stderr=True, highlight=False, emoji=False, soft_wrap=True)
    try:
        if argv and argv[0] in COMMANDS:
            args = command_parser(argv[0]).parse_args(argv[1:])
            return globals()[f"cmd_{argv[0]}"](args, console)
        if argv and _is_command_word(argv[0]):
            return run_plugin_command(argv[0], argv[1:], console)
        return cmd_build(build_parser().parse_args(argv), console, argv)
    except GenesisError as e:
        err.print(f"[red]error:[/] {_esc(str(e))}", soft_wrap=True)
        return e.exit_code
    except KeyboardInterrupt:
        err.print("[yellow]interrupted[/]: no partial object was published; rerun to continue")
        return 130


def _is_command_word(arg: str) -> bool:
    """A bare word (``serve``): a plugin command; targets always hold a ``:``, options start with ``-``."""
    return bool(arg) and not arg.startswith("-") and ":" not in arg


def run_plugin_command(name: str, argv: list[str], console: Any) -> int:
    """Parse and run a command a plugin registered (``genesis_build.stage.command``) in the workspace given
    by ``-C`` (or found from the current directory)."""
    from .stage import commands, load_plugins
    from .workspace import load

    pre = argparse.ArgumentParser(add_help=False)
    _common(pre)
    known, _ = pre.parse_known_args(argv)
    start = Path(known.workspace) if known.workspace else None
    try:
        ws = load(start, cache_override=known.cache)
        plugins = ws.plugins
    except GenesisError:
        if "-h" not in argv and "--help" not in argv:
            raise
        ws, plugins = None, ["stages"]  # help outside a workspace: the default plugin's commands
    if ws is not None and str(ws.root) not in sys.path:
        sys.path.insert(0, str(ws.root))  # a workspace's own plugin modules (as Project does)
    load_plugins(plugins)
    cmd = commands().get(name)
    if cmd is None:
        from .errors import did_you_mean

        known_cmds = sorted(set(COMMANDS) | set(commands()))
        raise GenesisError(f"unknown command or target '{name}' (targets are kind:name or stage:name[/part]; "
                           f"commands: {', '.join(known_cmds)}){did_you_mean(name, known_cmds)}")
    p = argparse.ArgumentParser(prog=f"genesis-build {name}", description=cmd.help)
    if cmd.configure is not None:
        cmd.configure(p)
    _common(p)
    args = p.parse_args(argv)
    from .commands import Session
    from .executor import Engine

    return int(cmd.run(args, Session(Engine(ws, console), console)) or 0)


def _esc(text: object) -> str:
    """Text for a rich markup string, printed verbatim (spec values may contain `[...]`)."""
    from rich.markup import escape

    return escape(str(text))


def _engine(args: argparse.Namespace, console: Any) -> Any:
    from .executor import Engine
    from .workspace import load

    start = Path(args.workspace) if getattr(args, "workspace", None) else None
    return Engine(load(start, cache_override=getattr(args, "cache", None)), console)


def _targets(engine: Any, targets: list[str]) -> list[str]:
    if targets:
        return targets
    if not engine.ws.default:
        raise GenesisError("no target given and genesis.toml has no [workspace] default")
    return [engine.ws.default]


def _graph_of(engine: Any, targets: list[str]) -> Any:
    return engine.project.expand(targets)


# ---------------------------------------------------------------------------------------------
# build / dry-run


def cmd_build(args: argparse.Namespace, console: Any, argv: list[str] | None = None) -> int:
    """Build (or with --dry-run, explain) the targets."""
    from .fastpath import Recorder

    engine = _engine(args, console)
    named_variant = any("@" in t for t in args.targets)
    if args.set or args.sweep or args.save or named_variant:
        argv = None  # a variant run never answers from, nor records, the stat-only no-op fast path
    record = Recorder(engine, argv)  # stats first: what the answer below depends on
    variants = None
    targets = _targets(engine, args.targets)
    if args.set or args.sweep or args.save:
        if named_variant:
            raise GenesisError("--set/--sweep apply to base targets, not to a variant's name: give all overrides")
        targets, variants = _apply_overrides(engine, targets, args, console)
    elif named_variant:
        from . import experiments

        variants = experiments.from_log(engine, targets)
    graph = _graph_of(engine, targets)
    force: set[str] = set()
    for f in args.force:
        force.update(engine.project.resolve_target(f))
        if not set(engine.project.resolve_target(f)) <= set(graph.nodes):
            raise GenesisError(f"--force {f}: not part of the graph of {', '.join(targets)}")
    record.add_graph(graph)
    pusher = _pusher(engine, targets, args.push) if args.push and not args.dry_run else None
    if args.dry_run:
        status = engine.status(graph, force)
        if args.format == "json":
            text = json.dumps([s.as_json() for s in status.values()], indent=1) + "\n"
            plain = ansi = text
        else:
            plain, ansi = _render(console, lambda c: print_status_tree(c, engine, graph, targets, status))
        sys.stdout.write(ansi if console.is_terminal else plain)
        record.save_dry_run(status, plain, ansi)
        return 0
    from .progress import BuildUI

    options: dict[str, Any] = {"reset_optimizer": True} if args.reset_optimizer else {}
    if args.workers:
        options["workers"] = args.workers
    with BuildUI(console, quiet=args.quiet) as ui:
        results = engine.build(graph, targets, jobs=args.jobs, keep_going=args.keep_going, force=force,
                               options=options, ui=ui)
    counts: dict[str, int] = {}
    for r in results:
        counts[r.outcome] = counts.get(r.outcome, 0) + 1
    summary = ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
    failed = [r for r in results if r.outcome == "failed"]
    noop = " (no-op)" if results and all(r.outcome == "cached" for r in results) else ""
    console.print(f"{len(results)} nodes: {summary}{noop}")
    if variants:
        from . import experiments

        for v in variants:
            experiments.record(engine, v, results)
    links = []
    for t in targets:
        link = engine.ws.out_dir / t.replace("/", "__")
        if link.is_symlink() and not failed:
            ids = engine.project.resolve_target(t)
            entry = engine.project.node(ids[0]).stage.entry if len(ids) == 1 else None
            shown = link / entry if entry and (link / entry).is_file() else link
            links.append(f"{t} → {os.path.relpath(shown, Path.cwd())}")
            console.print(_esc(links[-1]))
    if not failed:  # the answer the next identical invocation gets: everything is cached then
        record.save_build(results, "\n".join([f"{len(results)} nodes: {len(results)} cached (no-op)", *links]) + "\n")
    if variants and len(variants) > 1 and not failed:  # a sweep: its variants side by side
        from .compare import exp_rows, render_exp

        names = [t for v in variants for t in v.targets]
        render_exp(exp_rows(engine, only=names), None, "text", console)
    if failed:
        user = [getattr(r, "user_error", None) for r in failed]
        if all(user):
            raise user[0]  # a bad input found at run time: one line, exit 2
        for r in failed:
            if getattr(r, "traceback", None):
                sys.stderr.write(r.traceback)  # an engine bug, not a stage failure: show where
        return 1
    if pusher is not None:
        node_id, push = pusher
        key = next(r.key for r in results if r.id == node_id)
        url = push(engine.cache.data_dir(key), args.push)
        console.print(f"pushed {_esc(node_id)} → {_esc(url)}")
    return 0


def _pusher(engine: Any, targets: list[str], repo_id: str) -> tuple[str, Any]:
    """(node, push hook) for ``--push``: one target node whose stage declares ``push``.

    The stage's ``check_push(repo_id)`` (repo id, offline switch, token) runs before anything is built.
    """
    from .stage import stages

    ids = [i for t in targets for i in engine.project.resolve_target(t)]
    if len(ids) != 1:
        raise GenesisError(f"--push {repo_id}: give exactly one target to push (e.g. release:tiny), not {', '.join(ids)}")
    stage = engine.project.node(ids[0]).stage
    if stage.push is None:
        pushable = sorted(s.name for s in stages().values() if s.push is not None)
        raise GenesisError(f"--push {repo_id}: {ids[0]} cannot be pushed (stage {stage.name} has no push); "
                           f"push one of: {', '.join(f'{n}:<spec>' for n in pushable) or 'no stage can'}")
    if stage.check_push is not None:
        stage.check_push(repo_id)
    return ids[0], stage.push
def _apply_overrides(engine: Any, targets: list[str], args: argparse.Namespace, console: Any) -> tuple[list[str], Any]:
    """``--set``/``--sweep``/``--save``: install the variants; the targets become the variants' targets."""
    from . import experiments

    if args.save and (args.sweep or not args.set):
        raise GenesisError(f"--save {args.save}: needs --set (and no --sweep): it saves one variant")
    variants = experiments.apply(engine.project, targets, args.set, getattr(args, "sweep", []))
    if args.save:
        path = experiments.save(engine.project, variants[0], args.save)
        console.print(f"saved {_esc(engine.project.specs.rel(path))} (extends the base; build it as its own spec)")
    return [t for v in variants for t in v.targets], variants


def _render(console: Any, draw: Any) -> tuple[str, str]:
    """Render with rich into (plain, ansi) strings, so the answer can be recorded and replayed."""
    import io

    from rich.console import Console

    buf = io.StringIO()
    rec = Console(file=buf, force_terminal=True, width=console.width, record=True, highlight=False, emoji=False)
    draw(rec)
    return rec.export_text(styles=False), buf.getvalue()


STATE_STYLE = {"cached": "green", "stale": "yellow", "missing": "yellow", "waiting": "cyan", "forced": "magenta",
               "unresolved": "red"}
# "waiting" is in parentheses so the node id printed after the label does not read as one of its inputs
STATE_LABEL = {"cached": "cached", "stale": "stale → will run", "missing": "will run", "waiting": "will run (after its inputs)",
               "forced": "forced", "unresolved": "unresolved (a build refuses)"}


def print_status_tree(console: Any, engine: Any, graph: Any, targets: list[str], status: dict[str, Any]) -> None:
    """The DAG as a rich tree, each node with its state and reason."""
    from rich.tree import Tree

    shown: set[str] = set()

    def label(nid: str) -> str:
        s = status[nid]
        key = f" [dim]{s.key[:10]}[/]" if s.key else ""
        reason = f" — {_esc('; '.join(s.reasons))}" if s.reasons else ""
        return f"[{STATE_STYLE[s.state]}]{STATE_LABEL[s.state]}[/] [bold]{nid}[/]{key}{reason}"

    def add(tree: Any, nid: str) -> None:
        if nid in shown:
            tree.add(f"[dim]{nid} (see above)[/]")
            return
        shown.add(nid)
        branch = tree.add(label(nid))
        for w in status[nid].warnings:
            branch.add(f"[yellow]warning:[/] {_esc(w)}")
        for k, v in status[nid].describe:
            branch.add(f"[blue]{k}:[/] {_esc(v)}")
        for dep in sorted(graph.predecessors(nid)):
            add(branch, dep)

    for t in targets:
        ids = engine.project.resolve_target(t)
        root = Tree(f"[bold]{t}[/]")
        for nid in ids:
            add(root, nid)
        console.print(root)
    counts: dict[str, int] = {}
    for s in status.values():
        counts[s.state] = counts.get(s.state, 0) + 1
    to_run = sum(v for k, v in counts.items() if k != "cached")
    console.print(f"{len(status)} nodes: {counts.get('cached', 0)} cached, {to_run} to run")
    if counts.get("cached"):
        # by design a dry run reads no file content; say so, so nobody takes "cached" as "verified"
        console.print("[dim]cached = manifest present and stat signatures (size, mtime, ctime) unchanged; contents are not "
                      "rehashed here: run `genesis-build cache verify` to check them[/]")


# ---------------------------------------------------------------------------------------------
# why / show / graph


def _status_of(engine: Any, nid_or_target: str) -> tuple[str, Any, Any]:
    ids = engine.project.resolve_target(nid_or_target)
    if len(ids) != 1:
        raise GenesisError(f"{nid_or_target} stands for {len(ids)} nodes; name one: {', '.join(ids)}")
    graph = engine.project.expand(ids)
    status = engine.status(graph)
    return ids[0], status[ids[0]], status


def cmd_why(args: argparse.Namespace, console: Any) -> int:
    """Explain the state of one node in full."""
    from .graph import describe_changes

    engine = _engine(args, console)
    from . import experiments

    if args.set:
        args.node = experiments.apply(engine.project, [args.node], args.set, [])[0].targets[0]
    elif "@" in args.node:
        experiments.from_log(engine, [args.node])
    nid, st, status = _status_of(engine, args.node)
    console.print(f"[bold]{nid}[/]: [{STATE_STYLE[st.state]}]{STATE_LABEL[st.state]}[/]" + (f" (key {st.key})" if st.key else ""))
    if st.state == "stale":
        node = engine.project.node(nid)
        ref = engine.last_ref(nid)
        inputs = engine.project.input_ids(node)
        material = engine.material(node, {n: status[i].digest for n, i in inputs.items()})
        for r in describe_changes(ref["material"], material, limit=None):
            console.print(f"  - {_esc(r)}")
    elif st.state == "waiting":
        pending = [i for i in st.inputs if status[i].state != "cached"]
        for p in pending:
            console.print(f"  - input {p}: {STATE_LABEL[status[p].state]} ({_esc('; '.join(status[p].reasons))})")
    else:
        for r in st.reasons:
            console.print(f"  - {_esc(r)}")
    for w in st.warnings:
        console.print(f"  [yellow]warning:[/] {_esc(w)}")
    return 0


def cmd_show(args: argparse.Namespace, console: Any) -> int:
    """Print a node's manifest (current key if built, else its last build)."""
    engine = _engine(args, console)
    nid, st, _ = _status_of(engine, args.node)
    key = st.key if st.state == "cached" else None
    note = ""
    if key is None:
        ref = engine.refs.get(nid)
        if ref and engine.cache.has(ref["key"]):
            key, note = ref["key"], f" (last build; now {STATE_LABEL[st.state]}: {'; '.join(st.reasons)})"
    if key is None:
        console.print(f"{nid}: not built ({_esc('; '.join(st.reasons))})")
        return 1
    m = engine.cache.manifest(key) or {}
    console.print(f"[bold]{nid}[/] {key}{note}")
    console.print(f"path: {engine.cache.data_dir(key)}")
    if m.get("stats"):
        console.print("stats:")
        for k, v in m["stats"].items():
            console.print(f"  {k}: {_esc(json.dumps(v) if not isinstance(v, str) else v)}")
    console.print_json(json.dumps({k: v for k, v in m.items() if k != "outputs"}))
    console.print(f"{len(m.get('outputs', []))} files, {sum(e['size'] for e in m.get('outputs', []))} bytes")
    return 0


def cmd_graph(args: argparse.Namespace, console: Any) -> int:
    """Print the graph as dot, mermaid or node-link JSON."""
    engine = _engine(args, console)
    targets = _targets(engine, args.targets)
    from . import experiments

    if args.set:
        targets = experiments.apply(engine.project, targets, args.set, [])[0].targets
    elif any("@" in t for t in targets):
        experiments.from_log(engine, targets)
    graph = engine.project.expand(targets)
    print(render_graph(graph, args.format))
    return 0


def render_graph(graph: Any, fmt: str) -> str:
    """Render a DiGraph in one of the supported formats."""
    import networkx as nx

    order = list(nx.topological_sort(graph))
    if fmt == "json":
        return json.dumps(nx.node_link_data(graph, edges="edges"), indent=1)
    if fmt == "mermaid":
        ids = {n: f"n{i}" for i, n in enumerate(order)}
        lines = ["graph LR"] + [f'  {ids[n]}["{n}"]' for n in order]
        lines += [f"  {ids[a]} --> {ids[b]}" for a, b in graph.edges]
        return "\n".join(lines)
    lines = ["digraph genesis {", "  rankdir=LR;"] + [f'  "{n}";' for n in order]
    lines += [f'  "{a}" -> "{b}" [label="{d.get("name", "")}"];' for a, b, d in graph.edges(data=True)]
    return "\n".join(lines + ["}"])


def cmd_diff(args: argparse.Namespace, console: Any) -> int:
    """Two builds side by side (genesis_build/experiments.py)."""
    from .compare import cmd_diff as run

    return run(args, console, _engine(args, console))


def cmd_exp(args: argparse.Namespace, console: Any) -> int:
    """Every variant built in this workspace (genesis_build/experiments.py)."""
    from .compare import cmd_exp as run

    return run(args, console, _engine(args, console))


# ---------------------------------------------------------------------------------------------
# cache


def cmd_cache(args: argparse.Namespace, console: Any) -> int:
    """Cache maintenance commands."""
    from rich.table import Table

    from .cache import tree_size

    engine = _engine(args, console)
    cache = engine.cache
    if args.action == "ls":
        t = Table("key", "node", "size", "created", "wall s")
        import time

        for key in cache.keys():
            m = cache.manifest(key) or {}
            t.add_row(key[:16], m.get("node", "?"), _size(cache.size_of(key)),
                      time.strftime("%Y-%m-%d %H:%M", time.localtime(m.get("created", 0))), str(m.get("wall_time_s", "")))
        console.print(t)
        return 0
    if args.action == "du":
        per: dict[str, list[int]] = {}
        for key in cache.keys():
            m = cache.manifest(key) or {}
            e = per.setdefault(m.get("stage", "?"), [0, 0])
            e[0] += 1
            e[1] += cache.size_of(key)
        t = Table("stage", "objects", "size")
        for stage_name, (n, size) in sorted(per.items()):
            t.add_row(stage_name, str(n), _size(size))
        runs = tree_size(cache.root / "runs")
        samples = tree_size(cache.root / "samples")
        t.add_row("[dim]runs/ (resumable)[/]", "", _size(runs))
        t.add_row("[dim]samples/[/]", "", _size(samples))
        t.add_row("[bold]total[/]", str(sum(v[0] for v in per.values())), _size(sum(v[1] for v in per.values()) + runs + samples))
        console.print(t)
        return 0
    if args.action == "verify" and (args.remote or args.repair):
        if not args.remote:
            raise GenesisError("cache verify --repair: only with --remote (local corrupt objects are always quarantined)")
        return _verify_remote(engine, console, args.repair)
    if args.action == "verify":
        keys = [k for k in cache.keys() if not args.keys or any(k.startswith(p) for p in args.keys)]
        from .cache import ImmovableObject

        bad = stuck = 0
        for key in keys:
            problems = cache.verify(key)
            if problems:
                bad += 1
                node = (cache.manifest(key) or {}).get("node", "?")  # read before the object moves
                try:
                    where = str(cache.quarantine(key))
                except ImmovableObject as e:  # report it and go on with the other objects
                    stuck += 1
                    where = str(e)
                console.print(f"[red]corrupt[/] {key} ({_esc(str(node))}): {_esc('; '.join(problems[:3]))} → {_esc(where)}")
        tail = f", {stuck} corrupt that could not be moved aside" if stuck else ""
        console.print(f"verified {len(keys)} objects: {len(keys) - bad} ok, {bad - stuck} quarantined{tail}")
        return 1 if bad else 0
    if args.action == "gc":
        from .cache import collect_garbage

        report = collect_garbage(cache, everything=args.all, keep_days=args.keep_days, dry_run=args.dry_run)
        verb = "would delete" if args.dry_run else "deleted"
        for key, size, node in report.removed:
            console.print(f"{verb} {key[:16]} {_esc(node)} {_size(size)}")
        for path, size, what in report.scratch:
            if what == "run dir":
                console.print(f"{verb} {path} ({what}) {_size(size)}")
        removed, scratch = report.removed, report.scratch
        n_samples = sum(1 for s in scratch if s[2] == "sample")
        console.print(f"{verb} {len(removed)} objects, {_size(sum(r[1] for r in removed))}; kept {report.kept} referenced; "
                      f"{verb} {len(scratch) - n_samples} run dirs and {n_samples} samples, {_size(sum(s[1] for s in scratch))}")
        return 0
    if args.action in ("push", "pull"):
        from .remote import transfer

        if engine.remote is None:
            raise GenesisError("no remote cache configured: add [remote] url = \"s3://bucket/prefix\" to genesis.toml")
        status = engine.status(engine.project.expand(_targets(engine, args.targets)))
        n = transfer(engine.remote, cache, [st.key for st in status.values() if st.key is not None], args.action)
        console.print(f"{args.action}ed {n} objects")
        return 0
    return 2


def _verify_remote(engine: Any, console: Any, repair: bool) -> int:
    """``cache verify --remote [--repair]``: rehash every remote object and report the corrupt ones."""
    from .remote import verify_remote

    if engine.remote is None:
        raise GenesisError("no remote cache configured: add [remote] url = \"s3://bucket/prefix\" to genesis.toml")

    def report(key: str, node: str, problems: list[str], action: str) -> None:
        console.print(f"[red]corrupt[/] remote {key} ({_esc(node)}): {_esc('; '.join(problems[:3]))} → {_esc(action)}")

    n, bad = verify_remote(engine.remote, repair, report)
    console.print(f"verified {n} remote objects: {n - bad} ok, {bad} corrupt" + (f", {bad} repaired" if repair and bad else ""))
    return 1 if bad and not repair else 0


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


# ---------------------------------------------------------------------------------------------
# init


STARTER_TOML = """# genesis-build workspace (see README.md)
[workspace]
default = "model:tiny"   # what `genesis-build` with no argument builds
cache = "cache"          # or an absolute path shared between workspaces; GENESIS_CACHE overrides
plugins = ["stages"]     # modules that register spec kinds and stages

# [remote]
# url = "s3://bucket/genesis-cache"   # any fsspec URL: pull on miss, push after build
"""


def cmd_init(args: argparse.Namespace, console: Any) -> int:
    """Write genesis.toml and copy the built-in specs into DIR."""
    import shutil

    target = Path(args.dir).resolve()
    target.mkdir(parents=True, exist_ok=True)
    if (target / "genesis.toml").exists():
        raise GenesisError(f"{target / 'genesis.toml'} already exists")
    (target / "genesis.toml").write_text(STARTER_TOML)
    src = Path(__file__).resolve().parent.parent / "specs"
    copied = 0
    if src.is_dir() and src.resolve() != (target / "specs").resolve():
        for f in sorted(src.glob("*/*.toml")):
            dest = target / "specs" / f.parent.name / f.name
            if not dest.exists():
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(f, dest)
                copied += 1
    with open(target / ".gitignore", "a") as gi:
        gi.write("cache/\nout/\n.genesis/\n")
    console.print(f"initialised {target}: genesis.toml, {copied} specs; run `genesis-build --dry-run` there")
    return 0


if __name__ == "__main__":
    sys.exit(main())
