#!/usr/bin/env python3
"""The crate's module graph, and its cycles.

Reads every `crate::<module>` path under src/ (in `use` lines and inline paths alike),
draws an edge from the file's top-level module to the module it names, and reports the
cycles among top-level modules. A leaf kept inside another module for its domain's sake
(audit::chain) counts as a module of its own: it imports nothing from the crate, which
this script checks too.

    python3 scripts/module-graph.py          # cycles, if any; exit 1 when there is one
    python3 scripts/module-graph.py --edges  # every edge, then the cycles
    python3 scripts/module-graph.py DIR      # another tree's src/, e.g. an older commit's:
        git archive 42d6981 src | tar -x -C /tmp/old && python3 scripts/module-graph.py /tmp/old/src

.ci/run runs it, so that a change that makes two modules import each other fails CI.
"""

import re
import sys
from pathlib import Path

ARGS = [a for a in sys.argv[1:] if not a.startswith("--")]
SRC = Path(ARGS[0]).resolve() if ARGS else Path(__file__).resolve().parent.parent / "src"

# Submodules that stand as nodes of their own, each promised to be a leaf.
LEAVES = {"audit::chain": SRC / "audit" / "chain.rs"}
# Top-level modules promised to be leaves.
TOP_LEVEL_LEAVES = {"outcome", "grouped"}

PATH = re.compile(r"\bcrate::([a-z_]+)(?:::([a-z_]+))?")
# `use crate::{a, b::c}` groups name several modules at once.
GROUP = re.compile(r"\bcrate::\{([^}]*)\}", re.S)


def node_of(file: Path) -> str | None:
    """The node a source file belongs to: its top-level module, or a leaf of its own."""
    for leaf, path in LEAVES.items():
        if file == path:
            return leaf
    rel = file.relative_to(SRC)
    if rel.parts[0] in ("main.rs", "lib.rs"):
        return None  # The roots declare modules; they are not part of the graph.
    return rel.parts[0].removesuffix(".rs")


def named(first: str, second: str | None) -> str:
    both = f"{first}::{second}" if second else first
    return both if both in LEAVES else first


def code_of(text: str) -> str:
    """The text without comments and test modules: doc links name modules too."""
    text = re.sub(r"#\[cfg\(test\)\]\s*mod tests \{.*", "", text, flags=re.S)
    return "\n".join(line.split("//", 1)[0] for line in text.splitlines())


def edges() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for file in sorted(SRC.rglob("*.rs")):
        source = node_of(file)
        if source is None:
            continue
        code = code_of(file.read_text())
        targets = {named(a, b) for a, b in PATH.findall(code)}
        for group in GROUP.findall(code):
            for item in group.split(","):
                parts = item.strip().split("::")
                if parts[0]:
                    targets.add(named(parts[0], parts[1] if len(parts) > 1 else None))
        graph.setdefault(source, set()).update(t for t in targets if t != source)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected set of two or more modules (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def main() -> int:
    graph = edges()
    if "--edges" in sys.argv:
        for source in sorted(graph):
            print(f"{source} -> {', '.join(sorted(graph[source])) or '(nothing)'}")
    failed = False
    for leaf in sorted(set(LEAVES) | TOP_LEVEL_LEAVES):
        if graph.get(leaf):
            print(f"{leaf} is meant to be a leaf but imports {', '.join(sorted(graph[leaf]))}")
            failed = True
    found = cycles(graph)
    for component in found:
        print("import cycle among: " + ", ".join(component))
    if not found and not failed:
        print(f"no import cycle among the crate's {len(graph)} modules")
    return 1 if found or failed else 0


if __name__ == "__main__":
    sys.exit(main())
