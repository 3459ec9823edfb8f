"""Imports in dialer/ go one way: packages import only packages below them (`LAYERS`), and no
module imports, at run time, one that imports it.

`module_imports` reads a module's imports with `ast` (those inside functions too; those under
`if TYPE_CHECKING:` are left out, as they never run) and `find_cycles` names the circles in a graph
of them.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Bottom to top: a package may import its own modules and those of the packages before it.
# "dialer" is the top-level modules (settings, db, dbsteps, models, migrate, phone).
LAYERS = (
    "dialer",
    "dialer.ami",
    "dialer.campaigns",
    "dialer.contacts",
    "dialer.outcomes",
    "dialer.dialing",
    "dialer.control",
    "dialer.reports",
    "dialer.pbxsim",
    "dialer.demo",
    "dialer.cli",
)
# Entry points: run, never imported.
ENTRY_POINTS = {"dialer.__main__", "dialer.celery_app"}


def module_name(path: Path) -> str:
    """`dialer/pbxsim/wire.py` -> `dialer.pbxsim.wire`; a package's `__init__.py` -> the package."""
    parts = list(Path(path).resolve().relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def is_module(name: str) -> bool:
    """Whether `name` is a module or package in this repository (`dialer.x.y`, not a name in it)."""
    base = ROOT.joinpath(*name.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def _is_type_checking(test: ast.expr) -> bool:
    if isinstance(test, ast.Name):
        return test.id == "TYPE_CHECKING"
    return isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"


def module_imports(path: Path | str) -> set[str]:
    """The modules `path` imports when it runs, as dotted names.

    `from dialer.x import y` counts as `dialer.x.y` when that is a module, else as `dialer.x`;
    relative imports are resolved against the module's package. Imports inside functions count;
    imports under `if TYPE_CHECKING:` do not (its `else:` does).
    """
    path = Path(path).resolve()
    parts = module_name(path).split(".")
    package = parts if path.name == "__init__.py" else parts[:-1]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package[: len(package) - (node.level - 1)]
                if node.module:
                    base_parts = [*base_parts, *node.module.split(".")]
                base = ".".join(base_parts)
            else:
                base = node.module or ""
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                found.add(candidate if alias.name != "*" and is_module(candidate) else base)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
    return found


def import_graph(paths: Iterable[Path]) -> dict[str, set[str]]:
    """Each module of `paths` -> the modules among `paths` it imports."""
    by_name = {module_name(path): path for path in paths}
    return {name: module_imports(path) & by_name.keys() for name, path in by_name.items()}


def find_cycles(graph: Mapping[str, Iterable[str]]) -> list[set[str]]:
    """The import circles of `graph`: each strongly connected component of more than one module,
    and each module that imports itself (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[set[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph.get(node, ()):
                cycles.append(component)

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return sorted(cycles, key=sorted)


def _describe(cycles: list[set[str]], graph: Mapping[str, set[str]]) -> str:
    lines = []
    for cycle in cycles:
        lines.append(" <-> ".join(sorted(cycle)))
        for module in sorted(cycle):
            inside = sorted(graph[module] & cycle)
            lines.append(f"    {module} imports {', '.join(inside)}")
    return "\n".join(lines)


def test_find_cycles_sees_circles_and_self_imports() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a", "d"}, "e": {"d"}}
    assert find_cycles(graph) == [{"a", "b", "c"}, {"d"}]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_pbxsim_has_no_import_circle() -> None:
    graph = import_graph(sorted((ROOT / "dialer" / "pbxsim").glob("*.py")))
    assert "dialer.pbxsim.server" in graph
    cycles = find_cycles(graph)
    assert not cycles, "import circles in dialer/pbxsim:\n" + _describe(cycles, graph)


def layer_of(module: str) -> str:
    parts = module.split(".")
    package = ".".join(parts[:2])
    return package if package in LAYERS else "dialer"


def _dialer_modules() -> list[Path]:
    return sorted((ROOT / "dialer").rglob("*.py"))


def upward_imports(graph: Mapping[str, Iterable[str]]) -> list[str]:
    """Imports of `graph` against `LAYERS` (or of an entry point), described."""
    return sorted(
        f"{module} ({layer_of(module)}) imports {target} ({layer_of(target)})"
        for module, targets in graph.items()
        if module not in ENTRY_POINTS
        for target in targets
        if target in ENTRY_POINTS or LAYERS.index(layer_of(target)) > LAYERS.index(layer_of(module))
    )


def test_packages_import_only_downward() -> None:
    graph = import_graph(_dialer_modules())
    assert {layer_of(m) for m in graph} == set(LAYERS)  # every package is known here
    upward = upward_imports(graph)
    assert not upward, "imports against the layering:\n" + "\n".join(upward)


def test_the_layering_check_sees_upward_imports() -> None:
    graph = {
        "dialer.ami.client": {"dialer.settings", "dialer.dialing.payload"},
        "dialer.outcomes.listener": {"dialer.ami.events", "dialer.control.plan"},
        "dialer.cli.worker": {"dialer.dialing.celery_app", "dialer.models"},
        "dialer.demo.run": {"dialer.celery_app"},
    }
    assert upward_imports(graph) == [
        "dialer.ami.client (dialer.ami) imports dialer.dialing.payload (dialer.dialing)",
        "dialer.demo.run (dialer.demo) imports dialer.celery_app (dialer)",
        "dialer.outcomes.listener (dialer.outcomes) imports dialer.control.plan (dialer.control)",
    ]


def test_dialer_has_no_import_circle() -> None:
    graph = import_graph(_dialer_modules())
    cycles = find_cycles(graph)
    assert not cycles, "import circles in dialer/:\n" + _describe(cycles, graph)


def test_every_package_says_what_it_owns() -> None:
    for package in LAYERS[1:]:
        init = ROOT.joinpath(*package.split("."), "__init__.py")
        doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8")))
        assert doc and len(doc) > 40, f"{package} has no module doc saying what it owns"
