"""The import graph of `src/shopfloor`, read with the standard library's `ast` (nothing is
imported): no cycles between modules, and no import reaching up the layers below.

What counts as an import: every `import` / `from … import` statement anywhere in a module —
at module level *and inside functions* (a function-local import is still a dependency: it only
moves the cycle from import time to call time, where it fails later and less clearly). Imports
under `if TYPE_CHECKING:` do not count (they never run). `importlib.import_module("…")` with a
string (the registry's list of kind modules, `JobKind` paths) does not count either: that is how
shared code reaches kinds without depending on them.

`from package import name` counts as importing `package.name` when that is a module, else
`package` itself.

The layers, bottom to top. A module may import its own layer and the layers below it:

1. foundation: settings, the sandbox, the artifact store, the contracts (typed activity stubs,
   failure causes, visibility queries) and small pure helpers. Knows nothing of Temporal
   workers, job kinds or the controller.
2. core: the registry, the job conventions (`jobs`, `jobstate`, `heartbeats`), running user code
   (`usercode`), observability, the controller client and the CLI's shared helpers
   (`cli_common`), schedules' models and service. Names no kind: reaches kinds only by the
   registry's module-name strings.
3. kinds: `shopfloor.kinds.*`. A kind may import the layers below, its own modules, and another
   kind it builds on (poetry_research runs phased's runner). A kind's `routes` facet may also
   import `controller.deps` (the dependencies a route declares: the client, settings, auth):
   that is the controller's API for facets, not the controller.
4. app: what runs and serves it all — the worker, the controller, the CLI, the embedded stack
   and dev server, the schedules' routes and commands.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

SRC = Path(__file__).parents[1] / "src"
PACKAGE = SRC / "shopfloor"

FOUNDATION = (
    "shopfloor",
    "shopfloor.artifacts",
    "shopfloor.contracts",
    "shopfloor.durations",
    "shopfloor.egress",
    "shopfloor.failures",
    "shopfloor.filemodes",
    "shopfloor.ids",
    "shopfloor.inputs",
    "shopfloor.ports",
    "shopfloor.processes",
    "shopfloor.progress",
    "shopfloor.retry_after",
    "shopfloor.sandbox",
    "shopfloor.settings",
    "shopfloor.visibility",
)
CORE = (
    "shopfloor.activity_failures",
    "shopfloor.cli_common",
    "shopfloor.client",
    "shopfloor.display",
    "shopfloor.heartbeats",
    "shopfloor.idguard",
    "shopfloor.jobs",
    "shopfloor.jobstate",
    "shopfloor.killswitch",
    "shopfloor.observability",
    "shopfloor.outcome",
    "shopfloor.offload",
    "shopfloor.registry",
    "shopfloor.schedules.models",
    "shopfloor.schedules.service",
    "shopfloor.temporal",
    "shopfloor.usercode",
)
KINDS = ("shopfloor.kinds",)
APP = (
    "shopfloor.__main__",
    "shopfloor.cli",
    "shopfloor.controller",
    "shopfloor.devserver",
    "shopfloor.schedules",
    "shopfloor.stack",
    "shopfloor.worker",
)
LAYERS = {"foundation": FOUNDATION, "core": CORE, "kinds": KINDS, "app": APP}
ORDER = list(LAYERS)
# What a kind's `routes` facet may import from the app layer.
FACET_API = {"shopfloor.controller.deps"}

# Upward imports that are allowed to remain, each with the edge that causes it: none. (The
# last two, usercode naming the simulation's GL module and observability reading the pipeline
# kind's definitions, moved into their kinds in issue 21.)
KNOWN_UPWARD: set[tuple[str, str]] = set()


@dataclass(frozen=True)
class Import:
    source: str
    target: str
    line: int
    in_function: bool

    def __str__(self) -> str:
        where = " (in a function)" if self.in_function else ""
        return f"{self.source}:{self.line} imports {self.target}{where}"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _known_module(name: str) -> str | None:
    """The module of ours that `name` is, or is in (an attribute of a module); None when it is
    not ours."""
    while name:
        if name in MODULES:
            return name
        if "." not in name:
            return None
        name = name.rsplit(".", 1)[0]
    return None


def imports_of(name: str) -> list[Import]:
    path = MODULES[name]
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found: list[Import] = []

    def add(target: str, line: int, in_function: bool) -> None:
        module = _known_module(target)
        if module is not None and module != name:
            found.append(Import(name, module, line, in_function))

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _type_checking(child):
                for stmt in child.orelse:
                    visit_one(stmt, in_function)
                continue
            visit_one(child, in_function)

    def visit_one(node: ast.AST, in_function: bool) -> None:
        in_function = in_function or isinstance(
            node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda
        )
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, node.lineno, in_function)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package[: len(package) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                add(submodule if submodule in MODULES else base, node.lineno, in_function)
        visit(node, in_function)

    visit(ast.parse(path.read_text(), str(path)), False)
    return found


GRAPH = {name: imports_of(name) for name in MODULES}


def layer_of(module: str) -> str:
    best, layer = -1, None
    for name, prefixes in LAYERS.items():
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, layer = len(prefix), name
    assert layer is not None, f"{module} is in no layer: add it to one in {__file__}"
    return layer


def _cycles() -> Iterator[list[str]]:
    """Strongly connected components of more than one module (Tarjan's, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    counter = 0
    for root in GRAPH:
        if root in index:
            continue
        work = [(root, 0)]
        while work:
            node, i = work.pop()
            if i == 0:
                index[node] = low[node] = counter
                counter += 1
                stack.append(node)
                on_stack.add(node)
            targets = [imp.target for imp in GRAPH[node]]
            if i < len(targets):
                work.append((node, i + 1))
                target = targets[i]
                if target not in index:
                    work.append((target, 0))
                elif target in on_stack:
                    low[node] = min(low[node], index[target])
                continue
            for imp in GRAPH[node]:
                if imp.target in on_stack:
                    low[node] = min(low[node], low[imp.target])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    yield sorted(component)


def test_the_graph_is_read() -> None:
    assert len(MODULES) > 100
    jobs = {imp.target for imp in GRAPH["shopfloor.jobs"]}
    assert "shopfloor.contracts" in jobs
    # Under TYPE_CHECKING: not a dependency.
    assert "shopfloor.artifacts" not in {imp.target for imp in GRAPH["shopfloor.registry"]}
    # Inside a function: a dependency.
    assert any(imp.in_function for imp in GRAPH["shopfloor.settings"])


def test_no_import_cycles() -> None:
    problems = []
    for component in _cycles():
        members = set(component)
        edges = sorted({str(i) for m in component for i in GRAPH[m] if i.target in members})
        problems.append(f"cycle {component}:\n    " + "\n    ".join(edges))
    assert not problems, "\n".join(problems)


def _upward() -> list[Import]:
    found = []
    for imports in GRAPH.values():
        for imp in imports:
            source, target = layer_of(imp.source), layer_of(imp.target)
            if ORDER.index(target) <= ORDER.index(source):
                continue
            if source == "kinds" and imp.target in FACET_API:
                continue
            found.append(imp)
    return found


def test_no_upward_imports() -> None:
    new = [str(i) for i in _upward() if (i.source, i.target) not in KNOWN_UPWARD]
    assert not new, "imports reaching up a layer:\n" + "\n".join(new)


def test_the_known_upward_imports_are_still_there() -> None:
    """A known upward import that was fixed must leave KNOWN_UPWARD (the list only shrinks)."""
    current = {(i.source, i.target) for i in _upward()}
    assert not KNOWN_UPWARD - current, f"fixed, take off KNOWN_UPWARD: {KNOWN_UPWARD - current}"


def test_kinds_are_reached_only_by_name_outside_the_kinds() -> None:
    """Shared code never imports a kind (upward, covered above); and within the kinds, a kind
    imports another only where it says so."""
    allowed = {("poetry_research", "phased")}
    crossing = []
    for imports in GRAPH.values():
        for imp in imports:
            if not (
                imp.source.startswith("shopfloor.kinds.")
                and imp.target.startswith("shopfloor.kinds.")
            ):
                continue
            here, there = imp.source.split(".")[2], imp.target.split(".")[2]
            if here != there and (here, there) not in allowed:
                crossing.append(str(imp))
    assert not crossing, "\n".join(crossing)
