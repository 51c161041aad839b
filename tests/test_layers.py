"""The import graph points one way (DESIGN.md, Layers): stems → cost profiler → experiments → report → entry
points, with no cycle between modules and no module much over 500 lines. Read from the source with `ast`, so
imports inside functions count too (an import hidden in a function must not dodge a layer either)."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("stems", "analyze", "experiments", "hydra_plugins")
ENTRY_POINTS = ("train", "stems.__main__", "analyze.__main__", "hydra_plugins")

# the longest matching prefix decides a module's layer
LAYERS = [
    ("stems", 0),
    ("analyze.profile", 1),
    ("analyze", 1),  # the package's __init__: imports nothing
    ("experiments", 2),
    ("analyze.report", 3),
    ("analyze.dashboard", 3),
    ("analyze.evaluate", 3),  # a command over a finished run: reads its record, rebuilds its data and model
]
ENTRY_LAYER = 4
NAMES = {0: "stems", 1: "cost profiler", 2: "experiments", 3: "report", 4: "entry points"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> int:
    if any(module == e or module.startswith(e + ".") for e in ENTRY_POINTS):
        return ENTRY_LAYER
    matches = [(len(prefix), n) for prefix, n in LAYERS if module == prefix or module.startswith(prefix + ".")]
    return max(matches)[1]


def project_modules() -> dict[str, Path]:
    files = [ROOT / "train.py", *(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))]
    return {module_name(p): p for p in files}


def imports(module: str, path: Path, modules: dict[str, Path], top_level_only: bool) -> set[str]:
    """The project modules `module` imports (relative imports resolved)."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else ast.walk(tree)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            names = [f"{base}.{a.name}" for a in node.names] + [base]
        else:
            continue
        for name in names:
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name and name != module:
                found.add(name)
    return found


def test_no_import_points_to_a_higher_layer():
    modules = project_modules()
    upward = [f"{m} ({NAMES[layer(m)]}) imports {n} ({NAMES[layer(n)]})"
              for m, p in modules.items() for n in imports(m, p, modules, top_level_only=False) if layer(n) > layer(m)]
    assert upward == []


def test_no_import_cycle():
    modules = project_modules()
    graph = {m: imports(m, p, modules, top_level_only=True) for m, p in modules.items()}
    # a package's __init__ importing its own submodules is how a package exports them, not a cycle
    graph = {m: {n for n in deps if not n.startswith(m + ".")} for m, deps in graph.items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(m: str, path: list[str]) -> list[str] | None:
        state[m] = 1
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                return path + [m, n]
            if n not in state and (cycle := visit(n, path + [m])):
                return cycle
        state[m] = 2
        return None

    cycles = [c for m in sorted(graph) if m not in state and (c := visit(m, []))]
    assert cycles == []


def test_no_module_is_much_over_500_lines():
    long = {m: n for m, p in project_modules().items() if (n := len(p.read_text().splitlines())) > 550}
    assert long == {}
