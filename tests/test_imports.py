"""The import structure of cnnjit: no import cycles, few imports inside functions, layers kept apart.

The graph is built from the source text with ``ast`` (nothing is imported), so a cycle shows up whether or
not it happens to bite at run time. Every ``import`` statement is an edge, at module level or inside a
function: an import moved into a function to dodge a cycle still makes one. Only ``if TYPE_CHECKING:``
blocks are skipped, since they never run. The package layout (``cnnjit.ir`` lives in ``ir/`` and so on) is
read from ``pyproject.toml``.

``python tests/test_imports.py`` prints the cycles and the function-level imports.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pytest depends on tomli there
    import tomli as tomllib

REPO_DIR = Path(__file__).resolve().parents[1]

#: Function-level imports allowed without counting: optional dependencies, and heavy ones that only a
#: command-line path needs, so that ``import cnnjit`` never pays for them. (numpy, onnx, numba and
#: llvmlite are not here: ``import cnnjit`` loads them anyway.)
OPTIONAL_HEAVY = {
    "onnxruntime",  # the test/bench oracle; not a dependency of cnnjit at all
    "matplotlib",  # bar charts of `cnnjit bench --png`; the `bench` extra
    "rich",  # tables and progress bars of the command line only
}
#: Functions whose whole job is to import something heavy on first use, so that ``import cnnjit`` (and a warm
#: start from the compiled-program cache) never pays for it: their imports are not counted. Each one binds
#: what it imports once; everything else still imports at module level. (file, function) -> why
LAZY_LOADERS = {
    ("cnnjit/api.py", "_load_compiler"): "the compiler (numba), on the first full compile",
    ("runtime/native.py", "_binding"): "llvmlite.binding, on the first warm start",
    ("cnnjit/cli/__init__.py", "command_module"): "one command's module (and what it imports), when it runs",
    ("compiler/frontend/onnx_proto.py", "_onnx"): "onnx, for the element types its own readers leave to onnx",
}
#: At most this many function-level imports of project or third-party modules outside OPTIONAL_HEAVY
#: (the standard library is not counted).
MAX_FUNCTION_IMPORTS = 20
FRONTEND = "cnnjit.compiler.frontend"


@dataclass(frozen=True)
class Import:
    """One imported module: where the statement is, and whether it sits inside a function."""

    source: str  # importing module, e.g. "cnnjit.api"
    target: str  # imported module, e.g. "cnnjit.compiler.frontend.loader" or "numpy"
    path: str  # file relative to the repository
    line: int
    in_function: bool


def package_dirs() -> dict[str, Path]:
    """Package name -> directory, from pyproject's ``package-dir`` (``cnnjit.ir`` -> ``ir/``, ...)."""
    config = tomllib.loads((REPO_DIR / "pyproject.toml").read_text())
    mapping = config["tool"]["setuptools"]["package-dir"]
    return {name: REPO_DIR / folder for name, folder in mapping.items()}


def project_modules() -> dict[str, Path]:
    """Every module of the project by dotted name. A directory mapped to its own package is not walked
    again as a subpackage of its parent."""
    roots = package_dirs()
    root_paths = {p.resolve() for p in roots.values()}
    modules: dict[str, Path] = {}
    for package, folder in roots.items():
        for path in sorted(folder.rglob("*.py")):
            rel = path.relative_to(folder)
            inner_dirs = [folder.joinpath(*rel.parts[:i]).resolve() for i in range(1, len(rel.parts))]
            if "__pycache__" in rel.parts or any(d in root_paths for d in inner_dirs):
                continue
            parts = list(rel.with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join([package, *parts])] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _statements(tree: ast.AST, in_function: bool = False):
    """Yield (import node, inside a function?) for every import in the tree, skipping TYPE_CHECKING blocks."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node, in_function
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                yield from _statements(ast.Module(body=[child], type_ignores=[]), in_function)
        else:
            inner = in_function or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            yield from _statements(node, inner)


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> list[Import]:
    """The modules that ``module`` imports. ``from P import x`` imports ``P.x`` when that is a module of the
    project, else ``P``; relative imports are resolved against the module's package."""
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    rel_path = str(path.relative_to(REPO_DIR)) if path.is_relative_to(REPO_DIR) else str(path)
    found: list[Import] = []
    for node, in_function in _statements(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            if node.level:
                base_parts = package.split(".")
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                targets.append(sub if sub in modules else base)
        for target in dict.fromkeys(targets):
            found.append(Import(module, target, rel_path, node.lineno, in_function))
    return found


def all_imports() -> list[Import]:
    modules = project_modules()
    return [imp for module, path in modules.items() for imp in imports_of(module, path, modules)]


def import_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports (module-level and function-level alike)."""
    modules = project_modules()
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for imp in all_imports():
        if imp.target in modules and imp.target != imp.source:
            graph[imp.source].add(imp.target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
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
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
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
                    found.append(sorted(component))
    return sorted(found)


def describe_cycle(component: list[str]) -> str:
    """A cycle as its modules plus the import statements (file:line) that join them."""
    members = set(component)
    edges = sorted({f"    {imp.path}:{imp.line} {imp.source} -> {imp.target}"
                    + (" (in a function)" if imp.in_function else "")
                    for imp in all_imports() if imp.source in members and imp.target in members
                    and imp.source != imp.target})
    return f"{len(component)} modules: {', '.join(component)}\n" + "\n".join(edges)


def lazy_loader_lines() -> set[tuple[str, int]]:
    """(file, line) of every line inside the functions of LAZY_LOADERS (a missing one fails the rules)."""
    lines: set[tuple[str, int]] = set()
    for path, name in LAZY_LOADERS:
        tree = ast.parse((REPO_DIR / path).read_text())
        found = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == name]
        assert found, f"LAZY_LOADERS names {path}:{name}, which does not exist"
        lines |= {(path, ln) for n in found for ln in range(n.lineno, n.end_lineno + 1)}
    return lines


def function_imports() -> list[Import]:
    """Import statements inside functions that import a project or third-party module, one per statement,
    less those of the optional heavy dependencies, of the standard library and of the lazy loaders."""
    counted: dict[tuple[str, int], Import] = {}
    lazy = lazy_loader_lines()
    for imp in all_imports():
        top = imp.target.partition(".")[0]
        if (imp.in_function and top not in sys.stdlib_module_names and top not in OPTIONAL_HEAVY
                and (imp.path, imp.line) not in lazy):
            counted.setdefault((imp.path, imp.line), imp)
    return list(counted.values())


# -- the analysis itself must see what it claims to see ----------------------------------------------------

def test_graph_sees_the_known_layout():
    modules = project_modules()
    assert "cnnjit" in modules and "cnnjit.api" in modules
    assert modules["cnnjit.ir.graph"] == REPO_DIR / "ir" / "graph.py"
    assert modules["cnnjit.compiler.frontend"] == REPO_DIR / "compiler" / "frontend" / "__init__.py"
    assert not any(m.startswith("cnnjit.ir.ir") or m.startswith("cnnjit.compiler.compiler") for m in modules)
    graph = import_graph()
    # cnnjit/__init__.py imports .api; runtime/__init__.py imports .model
    assert "cnnjit.api" in graph["cnnjit"]
    assert "cnnjit.runtime.model" in graph["cnnjit.runtime"]


def test_cycle_finder_and_import_parser(tmp_path):
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    src = tmp_path / "m.py"
    src.write_text("from typing import TYPE_CHECKING\nimport numpy\nif TYPE_CHECKING:\n    import onnx\n"
                   "def f():\n    from . import x\n    import numba.core\n"
                   "class C:\n    def g(self):\n        lam = lambda: None\n        from ..y import z\n")
    found = imports_of("pkg.sub.m", src, {"pkg.sub.x": src, "pkg.y.z": src})
    got = {(imp.target, imp.in_function) for imp in found}
    assert got == {("typing", False), ("numpy", False), ("pkg.sub.x", True), ("numba.core", True),
                   ("pkg.y.z", True)}


# -- the rules -----------------------------------------------------------------------------------------------

def test_no_import_cycles():
    found = cycles(import_graph())
    assert not found, f"{len(found)} import cycle(s):\n" + "\n".join(describe_cycle(c) for c in found)


def test_few_function_level_imports():
    found = function_imports()
    listing = "\n".join(f"  {imp.path}:{imp.line} {imp.target}" for imp in found)
    assert len(found) <= MAX_FUNCTION_IMPORTS, (
        f"{len(found)} import statements inside functions (at most {MAX_FUNCTION_IMPORTS}; "
        f"exempt: {sorted(OPTIONAL_HEAVY)} and the standard library):\n{listing}")


def test_runtime_does_not_import_the_frontend():
    """docs/architecture.md: ``runtime/`` never imports the frontend, directly or through other modules."""
    graph = import_graph()
    bad = []
    for start in sorted(m for m in graph if m.startswith("cnnjit.runtime")):
        seen, todo, parent = {start}, [start], {}
        while todo:
            node = todo.pop()
            for child in graph[node]:
                if child not in seen:
                    seen.add(child)
                    parent[child] = node
                    todo.append(child)
        reached = sorted(m for m in seen if m == FRONTEND or m.startswith(FRONTEND + "."))
        if reached:
            chain, node = [reached[0]], reached[0]
            while node != start:
                node = parent[node]
                chain.append(node)
            bad.append(" -> ".join(reversed(chain)))
    assert not bad, "runtime/ reaches the frontend:\n  " + "\n  ".join(bad)


def test_import_cnnjit_leaves_the_optional_dependencies_out():
    """What OPTIONAL_HEAVY exempts stays lazy: a fresh ``import cnnjit`` loads none of it."""
    code = "import sys, cnnjit; print(' '.join(sorted(m for m in sys.modules if m.partition('.')[0] in %r)))"
    out = subprocess.run([sys.executable, "-c", code % sorted(OPTIONAL_HEAVY)], capture_output=True, text=True,
                         check=True, cwd=REPO_DIR).stdout.split()
    assert out == [], f"import cnnjit loads {out}"


def test_compile_and_run_leave_onnx_out(tmp_path):
    """A cold compile and a run of a model file (the command line's path) read it with the frontend's own
    ``onnx_proto``: the onnx package (about a second of CPU, mostly ``ml_dtypes``) is never imported."""
    code = ("import sys, numpy as np, cnnjit\n"
            "m = cnnjit.compile(cnnjit.example_model(), input_shapes={'input_1': (1, 49, 10, 1)})\n"
            "m(np.zeros((1, 49, 10, 1), np.float32))\n"
            "print(m.compile_report().compiled, sorted(n for n in sys.modules if n.partition('.')[0] == 'onnx'))")
    env = {**os.environ, "CNNJIT_CACHE_DIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO_DIR,
                         env=env).stdout.strip().split(maxsplit=1)
    assert int(out[0]) > 0 and out[1] == "[]", out  # (kernels compiled here, not loaded from a cache)


if __name__ == "__main__":
    for component in cycles(import_graph()):
        print(describe_cycle(component), end="\n\n")
    imports = function_imports()
    print(f"{len(imports)} function-level imports (not counting stdlib and {sorted(OPTIONAL_HEAVY)}):")
    for imp in imports:
        print(f"  {imp.path}:{imp.line} {imp.source} -> {imp.target}")
