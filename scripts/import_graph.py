#!/usr/bin/env python3
"""Import graph of the patchfuse_jax package: cycles, layer order, and its section of docs/design.md.

    python scripts/import_graph.py                               # check; exit 1, one line per problem
    python scripts/import_graph.py --write-docs docs/design.md   # (re)write the generated section
    python scripts/import_graph.py --check-docs docs/design.md   # also exit 1 if that section is stale

A unit is a sub-package (``nn/``, ``fuse/``, ...; nested folders belong to their top one) or a flat
top-level module (``io``, ``workdir``, ``__main__``, ``__init__``). Every import of a package module
counts, top-level or inside a function. Importing a name that ``__init__.py`` re-exports lazily (its
``_LAZY`` dict: name -> module path relative to the package, dotted) counts as importing the module
that defines it. Problems: module import cycles, imports of a higher layer (``LAYERS``; ``__init__``
is exempt), units missing from ``LAYERS``, imports of package modules that do not exist, and lazy
names that are also module names (once that module is imported, the package attribute is the module).
Stdlib only.
"""

import argparse
import ast
import sys
from collections import deque
from pathlib import Path
from typing import NamedTuple

# Lower index = lower layer; a unit may import units of its own or a lower layer only.
LAYERS = [("io", "workdir"), ("checkpoint",), ("nn",), ("fusing",), ("eval",), ("train",), ("__main__",)]
REPO = Path(__file__).resolve().parents[1]
ROOT = "__init__"  # the package's own __init__.py
BEGIN, END = "<!-- import-graph:begin -->", "<!-- import-graph:end -->"
HEADING = "## Import graph (generated)"


class Graph(NamedTuple):
    package: Path
    modules: dict  # dotted name relative to the package ('nn.convs'; 'nn' for nn/__init__.py) -> Path
    edges: dict  # (importer, imported) -> (first "file:line", inside a function?)
    lazy: dict  # __init__'s lazy name -> defining module
    problems: list


def unit(module: str) -> str:
    return module.split(".")[0]


def _imports(node, local=False):
    """(import statement, inside a function?) for every import under ``node``."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            yield child, local
        yield from _imports(child, local or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))


def _read_lazy(tree: ast.Module, name: str) -> dict:
    """__init__'s ``_LAZY`` dict (name -> module relative to the package), or {}."""
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
        if any(isinstance(t, ast.Name) and t.id == "_LAZY" for t in targets):
            lazy = ast.literal_eval(node.value)
            return {k: v.removeprefix(name + ".").lstrip(".") for k, v in lazy.items()}
    return {}


def analyse(package) -> Graph:
    """Modules, import edges and lazy re-exports of the package folder ``package``."""
    pkg = Path(package).resolve()
    name, mods, edges, problems = pkg.name, {}, {}, []
    for path in sorted(pkg.rglob("*.py")):
        parts = path.relative_to(pkg).with_suffix("").parts
        mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts) or ROOT] = path
    trees = {m: ast.parse(p.read_text(encoding="utf-8"), str(p)) for m, p in mods.items()}
    try:
        lazy = _read_lazy(trees[ROOT], name) if ROOT in trees else {}
    except (ValueError, AttributeError):
        lazy = {}
        problems.append("__init__.py: _LAZY is not a literal dict of strings")
    for k, target in sorted(lazy.items()):
        if target not in mods:
            problems.append(f"lazy name: __init__.py: _LAZY[{k!r}] = {target!r} is no module of the package")
        if k in mods:
            problems.append(
                f"lazy name: __init__.py: {k!r} is also the module {name}.{k}: once that is "
                f"imported, `{name}.{k}` is the module, not the lazy object"
            )
    for m, tree in trees.items():
        ctx = "" if m == ROOT else m if mods[m].name == "__init__.py" else m.rpartition(".")[0]
        for node, local in _imports(tree):
            where = f"{mods[m].relative_to(pkg).as_posix()}:{node.lineno}"
            bad = f"unresolved import: {where}: `{ast.unparse(node)}`"
            targets = []
            if isinstance(node, ast.Import):
                for a in node.names:
                    if a.name == name or a.name.startswith(name + "."):
                        targets.append(a.name[len(name) + 1 :] or ROOT)
            else:
                if node.level == 0:
                    if node.module != name and not node.module.startswith(name + "."):
                        continue
                    base = node.module[len(name) + 1 :]
                else:
                    parts = ctx.split(".") if ctx else []
                    if node.level - 1 > len(parts):
                        problems.append(f"{bad} goes above the package")
                        continue
                    parts = parts[: len(parts) - node.level + 1] + ([node.module] if node.module else [])
                    base = ".".join(parts)
                for a in node.names:
                    sub = f"{base}.{a.name}" if base else a.name
                    targets.append(
                        lazy[a.name] if not base and a.name in lazy else sub if sub in mods else base or ROOT
                    )
            for t in targets:
                if t not in mods:
                    problems.append(f"{bad}: no module {name}.{t}")
                elif t != m and ((m, t) not in edges or edges[(m, t)][1] and not local):
                    edges[(m, t)] = (where, local)  # the first top-level import, else the first one
    return Graph(pkg, mods, edges, lazy, problems)


def _cycles(g: Graph) -> list:
    """One line per group of modules that import each other (directly or not): its shortest cycle
    through the group's first module, with where each import is."""
    adj = {m: sorted(d for s, d in g.edges if s == m) for m in g.modules}

    def tree(start):  # breadth-first: module reachable from start -> its predecessor
        prev, queue = {start: None}, deque([start])
        while queue:
            u = queue.popleft()
            for v in adj[u]:
                if v not in prev:
                    prev[v], _ = u, queue.append(v)
        return prev

    def chain(prev, u):
        return [u] + chain(prev, prev[u]) if prev[u] is not None else [u]

    reach, seen, out = {m: tree(m) for m in g.modules}, set(), []
    for m in sorted(g.modules):
        group = {w for w in reach[m] if m in reach[w]} - seen
        if len(group) < 2:
            continue
        seen |= group
        path = min((chain(reach[m], u)[::-1] for u in group if m in adj[u]), key=len) + [m]
        hops = [m] + [
            f"{d} [{g.edges[(s, d)][0]}{', in a function' * g.edges[(s, d)][1]}]" for s, d in zip(path, path[1:])
        ]
        rest = sorted(group - set(path))
        more = f"; also in its group: {', '.join(rest)}" if rest else ""
        out.append(f"import cycle: {' -> '.join(hops)}{more}")
    return out


def check(g: Graph, layers=None) -> list:
    """Every problem of the graph, one line each."""
    layer = {u: i for i, group in enumerate(LAYERS if layers is None else layers) for u in group}
    problems = g.problems + _cycles(g)
    for (s, d), (where, local) in sorted(g.edges.items()):
        us, ud = unit(s), unit(d)
        if ROOT not in (us, ud) and us in layer and ud in layer and layer[ud] > layer[us]:
            problems.append(
                f"upward import: {where}{' (in a function)' if local else ''}: {s} ({us}, layer "
                f"{layer[us]}) imports {d} ({ud}, layer {layer[ud]})"
            )
    for u in sorted({unit(m) for m in g.modules} - set(layer) - {ROOT}):
        problems.append(f"unit not in LAYERS: {u}")
    return problems


def render(g: Graph, layers=None) -> str:
    """The generated docs section, markers included."""
    layers = LAYERS if layers is None else layers
    present = {unit(m) for m in g.modules}
    ordered = [u for group in layers for u in group if u in present]
    ordered += [ROOT] * (ROOT in present) + sorted(present - set(ordered) - {ROOT})
    pos = {u: i for i, u in enumerate(ordered)}
    layer = {u: str(i) for i, group in enumerate(layers) for u in group} | {ROOT: "exempt"}
    uses = sorted({(unit(s), unit(d)) for s, d in g.edges if unit(s) != unit(d)}, key=lambda e: (pos[e[0]], pos[e[1]]))
    lazy = {unit(t) for t in g.lazy.values() if t in g.modules} - {d for s, d in uses if s == ROOT} - {ROOT}
    lines = [
        BEGIN,
        "Generated by `python scripts/import_graph.py --write-docs docs/design.md` and checked",
        "by the test suite (`tests/test_import_graph.py`): an arrow is an import (top-level or in a",
        "function), a dotted arrow a lazy re-export of `__init__.py`; a unit imports only units of its",
        "own or a lower layer.",
        "",
        "```mermaid",
        "graph TD",
    ]
    lines += [f'    u_{u}["{u}"]' for u in ordered]  # node ids from the names: new units change few lines
    lines += [f"    u_{s} --> u_{d}" for s, d in uses]
    lines += [f"    u_{ROOT} -.-> u_{d}" for d in sorted(lazy, key=pos.get)]
    lines += ["```", "", "| layer | unit | modules |", "| --- | --- | --- |"]
    for u in ordered:
        files = sorted(p.relative_to(g.package).as_posix() for m, p in g.modules.items() if unit(m) == u)
        lines.append(f"| {layer.get(u, 'not in LAYERS')} | `{u}` | {', '.join(f'`{f}`' for f in files)} |")
    return "\n".join(lines + [END])


def updated_doc(text: str, section: str) -> str:
    """``text`` with its generated section replaced by ``section`` (appended when it has none)."""
    if (BEGIN in text) != (END in text):
        raise SystemExit(f"import_graph: only one of the markers {BEGIN} {END} is present")
    if BEGIN not in text:
        return f"{text.rstrip()}\n\n{HEADING}\n\n{section}\n"
    head, _, rest = text.partition(BEGIN)
    return head + section + rest.partition(END)[2]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--package", type=Path, default=REPO / "patchfuse_jax", help="package folder")
    docs = ap.add_mutually_exclusive_group()
    docs.add_argument("--write-docs", type=Path, metavar="MD", help="rewrite the generated section of MD")
    docs.add_argument("--check-docs", type=Path, metavar="MD", help="exit 1 if that section of MD is stale")
    args = ap.parse_args(argv)
    g = analyse(args.package)
    problems, md = check(g), args.write_docs or args.check_docs
    if md:
        text = md.read_text(encoding="utf-8")
        new = updated_doc(text, render(g))
        if args.write_docs and new != text:
            md.write_text(new, encoding="utf-8")
            print(f"import_graph: wrote the import graph section of {md}")
        elif args.check_docs and new != text:
            problems.append(
                f"stale docs: {md}: the import graph section is not current "
                f"(python scripts/import_graph.py --write-docs {md})"
            )
    for p in problems:
        print(p, file=sys.stderr)
    if not problems:
        print(
            f"import_graph: {len(g.modules)} modules in {len({unit(m) for m in g.modules})} units: "
            "no cycles, no upward imports"
        )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
