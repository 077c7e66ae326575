"""The shape of the code, read from the source with `ast` (nothing is imported):

- no import cycle between any two modules of actors/, streams/, schemas/ and infra/;
- the layers: schemas imports nothing of ours; actors imports only schemas and actors; streams
  imports only schemas, actors and streams; none of them reaches Kafka (kafka, aiokafka, faust),
  a cloud (libcloud) or HTTP (httpx, requests, aiohttp, fastapi, starlette, uvicorn, the
  standard library's HTTP clients and servers); thespian, the actor runtime, in actors only.

Every import statement counts, at module level or inside a function (a deferred import is
still a dependency), relative ones resolved against their package. `from pkg import name` is an
edge to the module `pkg.name` when there is one, else to `pkg`. A package's `__init__` running
before its submodules is Python's doing, not an edge: a submodule importing its own package's
`__init__` is one only when it says so.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("actors", "streams", "schemas", "infra")
OURS = (*PACKAGES, "tests", "bench", "examples", "docs")
DOMAIN_LAYERS = {
    "schemas": {"schemas"},
    "actors": {"schemas", "actors"},
    "streams": {"schemas", "actors", "streams"},
}
"""What each domain package may import of ours."""
FORBIDDEN = (
    "kafka",
    "aiokafka",
    "faust",
    "libcloud",
    "httpx",
    "requests",
    "aiohttp",
    "fastapi",
    "starlette",
    "uvicorn",
    "urllib3",
    "http.client",
    "http.server",
    "urllib.request",
)
"""Neither Kafka, nor a cloud, nor HTTP in domain code."""
ACTOR_RUNTIME = {"thespian": {"actors"}}
"""A third-party package allowed in some domain packages only."""


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def discover() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "__pycache__" not in path.parts:
                found[module_name(path)] = path
    return found


MODULES = discover()


def imported_names(name: str, path: Path) -> list[tuple[str, int]]:
    """(dotted name, line) of everything the module imports, relative imports resolved;
    `from X import a` gives X.a (which `edges` reduces to X when X.a is no module)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            names.append((base, node.lineno))
            names += [(f"{base}.{alias.name}", node.lineno) for alias in node.names if alias.name != "*"]
        elif (
            isinstance(node, ast.Call)
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
            and (
                (isinstance(node.func, ast.Name) and node.func.id == "__import__")
                or (isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
            )
        ):
            names.append((node.args[0].value, node.lineno))  # __import__("x.y"), importlib.import_module("x.y")
    return names


def resolve(dotted: str) -> str | None:
    """The module of ours `dotted` names: itself, else its longest prefix that is one."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        candidate = ".".join(parts[:cut])
        if candidate in MODULES:
            return candidate
    return None


def edges() -> dict[str, dict[str, int]]:
    """module -> {module it imports: line of the first such import}."""
    graph: dict[str, dict[str, int]] = {}
    for name, path in MODULES.items():
        out = graph.setdefault(name, {})
        for dotted, line in imported_names(name, path):
            target = resolve(dotted)
            if target is not None and target != name:
                out.setdefault(target, line)
    return graph


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """One cycle (a → … → a) per strongly connected component of more than one module (Tarjan)."""
    index, low, on_stack, stack, components = {}, {}, set(), [], []
    counter = [0]

    def connect(v: str) -> None:  # iterative: the graph is deeper than the recursion limit may like
        work = [(v, iter(sorted(graph[v])))]
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter[0]
                    counter[0] += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        components.append(component)

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return [one_cycle(graph, set(component)) for component in components]


def one_cycle(graph: dict[str, dict[str, int]], component: set[str]) -> list[str]:
    """A shortest cycle through the component's first module (breadth-first, inside it)."""
    start = min(component)
    previous = {start: None}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for child in sorted(graph[node]):
            if child not in component:
                continue
            if child == start:
                path = [node]
                while previous[path[-1]] is not None:
                    path.append(previous[path[-1]])
                return [*reversed(path), start]
            if child not in previous:
                previous[child] = node
                queue.append(child)
    raise AssertionError(f"no cycle found in the component {sorted(component)}")


def test_every_module_is_read():
    files = [p for package in PACKAGES for p in (ROOT / package).rglob("*.py") if "__pycache__" not in p.parts]
    assert len(MODULES) == len(files) > 100
    assert {"actors.runtime", "streams.windows", "schemas.records", "infra.cli.main"} <= set(MODULES)


def test_the_reader_sees_deferred_relative_and_string_imports(tmp_path):
    source = tmp_path / "infra" / "x" / "mod.py"
    source.parent.mkdir(parents=True)
    source.write_text(
        "from . import sibling\nfrom ..y import thing\n"
        "def f():\n    import infra.z\n    __import__('infra.w', fromlist=['v'])\n"
    )
    names = {n for n, _ in imported_names("infra.x.mod", source)}
    assert {"infra.x.sibling", "infra.y.thing", "infra.z", "infra.w"} <= names


def test_no_import_cycle_between_modules():
    graph = edges()
    found = cycles(graph)
    # each module with the line of its import of the next: a:12 → b:30 → a
    described = [
        "  " + " → ".join(f"{a}:{graph[a][b]}" for a, b in zip(cycle, cycle[1:], strict=False)) + f" → {cycle[-1]}"
        for cycle in found
    ]
    assert not found, "import cycles between modules:\n" + "\n".join(described)


def test_the_cycle_finder_names_a_cycle():
    graph = {"a": {"b": 1}, "b": {"c": 2}, "c": {"a": 3, "d": 4}, "d": {}, "e": {"e2": 1}, "e2": {}}
    assert cycles(graph) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b": 1}, "b": {}}) == []


@pytest.mark.parametrize("name", sorted(n for n in MODULES if n.split(".")[0] in DOMAIN_LAYERS))
def test_domain_layers(name):
    layer = name.split(".")[0]
    wrong = []
    for dotted, line in imported_names(name, MODULES[name]):
        top = dotted.split(".")[0]
        if top in OURS and top not in DOMAIN_LAYERS[layer]:
            allowed = ", ".join(sorted(DOMAIN_LAYERS[layer]))
            wrong.append(f"line {line}: {dotted} ({layer} imports only {allowed} of ours)")
        elif any(dotted == f or dotted.startswith(f + ".") for f in FORBIDDEN):
            wrong.append(f"line {line}: {dotted} (no Kafka, cloud or HTTP in domain code)")
        elif top in ACTOR_RUNTIME and layer not in ACTOR_RUNTIME[top]:
            wrong.append(f"line {line}: {dotted} (only in {', '.join(sorted(ACTOR_RUNTIME[top]))})")
    assert not wrong, f"{name} ({MODULES[name].relative_to(ROOT)}):\n  " + "\n  ".join(wrong)
