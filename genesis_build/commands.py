"""What a plugin command (``genesis-build serve|chat|probe …``, registered with
:func:`genesis_build.stage.command`) gets: a :class:`Session` on the workspace.

The engine never imports a plugin's command; it parses the command line with the parser the plugin
configured and hands the session over. A session reads the workspace and its cache; it builds nothing.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import GenesisError
from .stage import InputRef, SpecView, lookup_object


def positive_int(text: str) -> int:
    """``--jobs`` and similar counts: an integer of at least 1 (the fast path applies the same rule)."""
    from .fastpath import positive_int_or_none

    n = positive_int_or_none(text)
    if n is None:
        raise argparse.ArgumentTypeError(f"must be an integer of at least 1, not {text!r}")
    return n


@dataclass(frozen=True)
class NodeView:
    """One node of the workspace's graph, as a command sees it."""

    id: str  # stage:name[/part]
    stage: str
    part: str | None
    view: SpecView  # the node's spec (``view.spec``, ``view.name``, ``view.resolve``)


class Session:
    """A command's read-only access to one workspace: its specs, nodes and cache, plus output."""

    def __init__(self, engine: Any, console: Any = None) -> None:
        self._engine = engine
        self.console = console

    @property
    def workspace(self) -> Path:
        """The workspace root."""
        return self._engine.ws.root

    def print(self, text: str) -> None:
        """Print ``text`` verbatim (no markup) to the command's console."""
        if self.console is None:
            print(text)
            return
        from rich.markup import escape

        self.console.print(escape(str(text)))

    def resolve(self, address: str) -> Any:
        """The validated pydantic spec ``kind:name`` (``extends`` merged)."""
        return self._engine.project.resolve(address)

    def node(self, target: str) -> NodeView:
        """The one node ``target`` (``stage:name[/part]`` or ``kind:name``) stands for."""
        ids = self._engine.project.resolve_target(target)
        if len(ids) != 1:
            raise GenesisError(f"{target} stands for {len(ids)} nodes; name one: {', '.join(ids)}")
        node = self._engine.project.node(ids[0])
        return NodeView(node.id, node.stage.name, node.part, self._engine.project.view(node.spec))

    def lookup(self, node: str | None = None, *, key: str | None = None) -> InputRef | None:
        """The object ``node`` last built in this workspace, or the one with ``key``; None when absent
        (same as :meth:`genesis_build.stage.Context.lookup`)."""
        return lookup_object(self.workspace, self._engine.cache.root, node, key=key)

    def built(self, target: str) -> InputRef:
        """The cached object of ``target`` as its specs are now (its key is current), or a GenesisError
        saying how to build it."""
        ids = self._engine.project.resolve_target(target)
        graph = self._engine.project.expand(ids)
        st = self._engine.status(graph)[ids[0]]
        if st.state != "cached":
            raise GenesisError(f"{target} is not built ({'; '.join(st.reasons)}): run `genesis-build {target}` first")
        found = lookup_object(self.workspace, self._engine.cache.root, key=st.key)
        if found is None:  # in the remote cache only: status counts it as cached, the data is not here
            raise GenesisError(f"{target} is not built ({'; '.join(st.reasons) or 'not in the local cache'}): "
                               f"run `genesis-build {target}` first")
        return found
