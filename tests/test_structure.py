"""Architecture rules for `gaia_app/` and `blueprints/`, checked statically with `ast`.

This module never imports the application: it reads the source files and parses them,
so it is fast and needs nothing beyond the standard library (pytest only to collect it).

The rules
---------
1. No import cycle among the modules of `gaia_app` and `blueprints` (packages included:
   `gaia_app/__init__.py` is module `gaia_app`, `gaia_app/providers/__init__.py` is
   `gaia_app.providers`). Every static import counts, top-level or lazy (inside a
   function or method), with ONE exception: imports inside an `if TYPE_CHECKING:` (or
   `if typing.TYPE_CHECKING:`) block are skipped, because type-only imports never run
   and so cannot form a runtime cycle (their `else:` branch does count).
   `import a.b.c` is an edge to `a.b.c`; `from a.b import c` is an edge to `a.b.c` when
   that is a module, else to `a.b`; relative imports are resolved against the importing
   module's package. No implicit edge is added to the parent packages of an imported
   submodule (nor from a package `__init__` to anything it does not itself import), so
   a module inside `a.b` importing `a.b.c` does not create a spurious cycle through
   `a/b/__init__.py`. A failure prints each cycle as `a -> b -> c -> a`.
2. Blueprints stay apart: a module under `blueprints/<x>/` never imports anything from
   `blueprints.<y>` (y != x), and `blueprints/__init__.py` imports no blueprint at all.
   `gaia_app` never imports `blueprints`: any static `import blueprints...` or
   `from blueprints... import ...` anywhere in `gaia_app/` fails, `gaia_app/__init__.py`
   included. (The factory mounts blueprints by name through
   `importlib.import_module(f"blueprints.{name}")`, a dynamic import this check does not
   see and does not forbid.) For this rule type-only imports count too: they still
   couple the packages.
3. No module longer than MAX_MODULE_LINES physical lines.
4. No function or method longer than MAX_FUNCTION_LINES lines, counted from the `def`
   line to its last line (`end_lineno - lineno + 1`, decorators not counted); methods
   and nested functions are measured separately (a nested function's lines also count
   towards its enclosing function).

Running it
----------
    .venv/bin/python -m pytest tests/test_structure.py -q   # as tests
    .venv/bin/python tests/test_structure.py                # operator report

Run as a script it prints the import graph's cycles and the offenders of every rule,
and exits 1 if there are any (0 when the tree is clean), so it doubles as the command
an operator or CI step runs to see what to fix.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60

REPO_ROOT = Path(__file__).resolve().parent.parent
TOP_FOLDERS = ("gaia_app", "blueprints")
BLUEPRINTS = "blueprints"
MAX_CYCLES_PER_COMPONENT = 200  # guards the report against a combinatorial explosion


# --------------------------------------------------------------------------- discovery


def discover_modules(root: Path, tops: tuple[str, ...] | list[str]) -> dict[str, Path]:
    """Map every dotted module name under `root/<top>` to its `.py` file."""
    modules: dict[str, Path] = {}
    for top in tops:
        base = root / top
        if not base.is_dir():
            continue
        for path in sorted(base.rglob("*.py")):
            rel = path.relative_to(root).with_suffix("")
            parts = list(rel.parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def _parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


# --------------------------------------------------------------------------- imports


@dataclass(frozen=True)
class Import:
    target: str  # fully qualified dotted name, resolved (relative imports made absolute)
    lineno: int
    type_only: bool  # inside an `if TYPE_CHECKING:` block


def _is_type_checking(test: ast.expr) -> bool:
    if isinstance(test, ast.Name):
        return test.id == "TYPE_CHECKING"
    if isinstance(test, ast.Attribute):
        return test.attr == "TYPE_CHECKING"
    return False


class _ImportCollector(ast.NodeVisitor):
    def __init__(self, module: str, is_package: bool, known: set[str] | dict[str, Path]):
        self.module = module
        self.is_package = is_package
        self.known = known
        self.imports: list[Import] = []
        self._type_only = 0

    def visit_If(self, node: ast.If) -> None:
        self.visit(node.test)
        if _is_type_checking(node.test):
            self._type_only += 1
            for stmt in node.body:
                self.visit(stmt)
            self._type_only -= 1
        else:
            for stmt in node.body:
                self.visit(stmt)
        for stmt in node.orelse:
            self.visit(stmt)

    def _add(self, target: str, lineno: int) -> None:
        self.imports.append(Import(target, lineno, self._type_only > 0))

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name, node.lineno)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            package = self.module.split(".") if self.is_package else self.module.split(".")[:-1]
            up = node.level - 1
            if up >= len(package):
                return  # beyond the top level: an ImportError at runtime, not an edge
            package = package[: len(package) - up] if up else package
            base = ".".join(package + ([node.module] if node.module else []))
        else:
            base = node.module or ""
        if not base:
            return
        for alias in node.names:
            candidate = f"{base}.{alias.name}"
            if alias.name != "*" and candidate in self.known:
                self._add(candidate, node.lineno)
            else:
                self._add(base, node.lineno)


def collect_imports(module: str, path: Path, known: set[str] | dict[str, Path]) -> list[Import]:
    """Every static import in `path` (module `module`), lazy ones included."""
    collector = _ImportCollector(module, path.name == "__init__.py", known)
    collector.visit(_parse(path))
    return collector.imports


def _owner(target: str, known: set[str] | dict[str, Path]) -> str | None:
    """The longest known module that `target` names (itself or a prefix)."""
    parts = target.split(".")
    while parts:
        name = ".".join(parts)
        if name in known:
            return name
        parts.pop()
    return None


def build_import_graph(root: Path, tops: tuple[str, ...] | list[str]) -> dict[str, set[str]]:
    """Runtime import graph of the modules under `root/<top>`: module -> modules it imports.

    Only edges between discovered modules; type-only (`if TYPE_CHECKING:`) imports and
    self-imports are left out, and no implicit edge to parent packages is added.
    """
    modules = discover_modules(root, tops)
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for imp in collect_imports(name, path, modules):
            if imp.type_only:
                continue
            dest = _owner(imp.target, modules)
            if dest is not None and dest != name:
                graph[name].add(dest)
    return graph


# --------------------------------------------------------------------------- cycles


def strongly_connected_components(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative (no recursion limit), deterministic order."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    components.append(sorted(component))
    return components


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every elementary cycle, each as a closed path `[a, b, ..., a]`.

    Each cycle is reported once, starting from its alphabetically smallest module.
    At most MAX_CYCLES_PER_COMPONENT per strongly connected component.
    """
    cycles: list[list[str]] = []
    for component in strongly_connected_components(graph):
        if len(component) < 2 and component[0] not in graph.get(component[0], ()):
            continue
        members = set(component)
        found: list[list[str]] = []
        for start in component:
            allowed = {m for m in members if m >= start}
            path = [start]
            on_path = {start}
            work = [iter(sorted(graph[start] & allowed))]
            while work and len(found) < MAX_CYCLES_PER_COMPONENT:
                for nxt in work[-1]:
                    if nxt == start:
                        found.append(path + [start])
                    elif nxt not in on_path:
                        path.append(nxt)
                        on_path.add(nxt)
                        work.append(iter(sorted(graph[nxt] & allowed)))
                        break
                else:
                    work.pop()
                    on_path.discard(path.pop())
        cycles.extend(found)
    return cycles


def format_cycle(cycle: list[str]) -> str:
    return " -> ".join(cycle)


# --------------------------------------------------------------------------- rules


def _rel(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def cycle_offenders(root: Path = REPO_ROOT, tops=TOP_FOLDERS) -> list[str]:
    return [format_cycle(c) for c in find_cycles(build_import_graph(root, tops))]


def blueprint_offenders(root: Path = REPO_ROOT, tops=TOP_FOLDERS) -> list[str]:
    modules = discover_modules(root, tops)
    offenders: list[str] = []
    for name, path in modules.items():
        parts = name.split(".")
        for imp in collect_imports(name, path, modules):
            target = imp.target.split(".")
            if target[0] != BLUEPRINTS:
                continue
            where = f"{_rel(path, root)}:{imp.lineno} imports {imp.target}"
            if parts[0] != BLUEPRINTS:
                offenders.append(f"{where} ({parts[0]} must not import blueprints)")
            elif len(target) > 1:
                own = parts[1] if len(parts) > 1 else None
                if target[1] != own:
                    mine = f"blueprint {own}" if own else "blueprints/__init__.py"
                    offenders.append(f"{where} ({mine} imports blueprint {target[1]})")
    return offenders


def module_size_offenders(root: Path = REPO_ROOT, tops=TOP_FOLDERS) -> list[str]:
    offenders = []
    for path in discover_modules(root, tops).values():
        count = len(path.read_text(encoding="utf-8").splitlines())
        if count > MAX_MODULE_LINES:
            offenders.append(f"{_rel(path, root)} ({count} lines)")
    return offenders


def function_size_offenders(root: Path = REPO_ROOT, tops=TOP_FOLDERS) -> list[str]:
    offenders = []
    for path in discover_modules(root, tops).values():
        for node in ast.walk(_parse(path)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                count = node.end_lineno - node.lineno + 1
                if count > MAX_FUNCTION_LINES:
                    offenders.append(f"{_rel(path, root)}:{node.lineno} {node.name} ({count} lines)")
    return sorted(offenders, key=lambda o: (o.split(":")[0], int(o.split(":")[1].split()[0])))


def _fail_message(title: str, offenders: list[str]) -> str:
    return f"{title}:\n" + "\n".join(f"  {o}" for o in offenders)


# --------------------------------------------------------------------------- real tree


def test_no_import_cycles():
    cycles = cycle_offenders()
    assert not cycles, _fail_message(f"{len(cycles)} import cycle(s), break one edge of each", cycles)


def test_blueprints_stay_apart():
    offenders = blueprint_offenders()
    assert not offenders, _fail_message("imports across blueprints / from gaia_app into blueprints", offenders)


def test_modules_stay_small():
    offenders = module_size_offenders()
    assert not offenders, _fail_message(f"modules over {MAX_MODULE_LINES} lines", offenders)


def test_functions_stay_short():
    offenders = function_size_offenders()
    assert not offenders, _fail_message(f"functions over {MAX_FUNCTION_LINES} lines", offenders)


# --------------------------------------------------------------------------- the checks can fail


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def test_cycle_finder_finds_a_planted_cycle(tmp_path):
    _write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/a.py": "import pkg.b\n",
        "pkg/b.py": "def later():\n    from pkg import a  # lazy\n    return a\n",
        "pkg/c.py": "import pkg.a\n",  # depends on the cycle, is not part of it
    })
    graph = build_import_graph(tmp_path, ["pkg"])
    assert graph["pkg.b"] == {"pkg.a"}
    assert cycle_offenders(tmp_path, ["pkg"]) == ["pkg.a -> pkg.b -> pkg.a"]


def test_type_checking_import_is_not_an_edge(tmp_path):
    _write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/a.py": "import pkg.b\n",
        "pkg/b.py": (
            "import typing\n"
            "from typing import TYPE_CHECKING\n"
            "if TYPE_CHECKING:\n"
            "    from pkg.a import Thing\n"
            "if typing.TYPE_CHECKING:\n"
            "    import pkg.a\n"
            "else:\n"
            "    import pkg.c\n"
        ),
        "pkg/c.py": "",
    })
    graph = build_import_graph(tmp_path, ["pkg"])
    assert graph["pkg.b"] == {"pkg.c"}
    assert cycle_offenders(tmp_path, ["pkg"]) == []


def test_relative_imports_resolve(tmp_path):
    _write(tmp_path, {
        "pkg/__init__.py": "from .sub import helper\n",
        "pkg/a.py": "X = 1\n",
        "pkg/sub/__init__.py": "from . import c\n",
        "pkg/sub/c.py": "from ..a import X\nfrom .. import a\nfrom .d import Y\n",
        "pkg/sub/d.py": "from . import Z\n",  # a name of pkg.sub, not a module
    })
    graph = build_import_graph(tmp_path, ["pkg"])
    assert graph["pkg"] == {"pkg.sub"}
    assert graph["pkg.sub"] == {"pkg.sub.c"}
    assert graph["pkg.sub.c"] == {"pkg.a", "pkg.sub.d"}
    assert graph["pkg.sub.d"] == {"pkg.sub"}
    # no implicit parent-package edges, so this is the only cycle
    assert cycle_offenders(tmp_path, ["pkg"]) == ["pkg.sub -> pkg.sub.c -> pkg.sub.d -> pkg.sub"]


def test_blueprint_rule_catches_planted_violations(tmp_path):
    _write(tmp_path, {
        "gaia_app/__init__.py": "import importlib\nimportlib.import_module('blueprints.x')\n",
        "gaia_app/core.py": "def f():\n    from blueprints.x import routes\n",
        "blueprints/__init__.py": "",
        "blueprints/x/__init__.py": "from . import routes\nfrom blueprints.x import routes as r\n",
        "blueprints/x/routes.py": "from gaia_app import core\n",
        "blueprints/y/__init__.py": "from ..x import routes\n",
    })
    assert blueprint_offenders(tmp_path, ["gaia_app", "blueprints"]) == [
        "gaia_app/core.py:2 imports blueprints.x.routes (gaia_app must not import blueprints)",
        "blueprints/y/__init__.py:1 imports blueprints.x.routes (blueprint y imports blueprint x)",
    ]


# --------------------------------------------------------------------------- script


def main() -> int:
    graph = build_import_graph(REPO_ROOT, TOP_FOLDERS)
    edges = sum(len(v) for v in graph.values())
    print(f"import graph: {len(graph)} modules, {edges} edges (gaia_app/, blueprints/)")
    reports = [
        ("import cycles", [format_cycle(c) for c in find_cycles(graph)]),
        ("blueprint isolation violations", blueprint_offenders()),
        (f"modules over {MAX_MODULE_LINES} lines", module_size_offenders()),
        (f"functions over {MAX_FUNCTION_LINES} lines", function_size_offenders()),
    ]
    failed = False
    for title, offenders in reports:
        print(f"\n{title}: {len(offenders) or 'none'}")
        for offender in offenders:
            print(f"  {offender}")
        failed = failed or bool(offenders)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
