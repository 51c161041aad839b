"""The import graph points one way, folder by folder (docs/DESIGN.md, Layers): stems/ → profiler/ → experiments/ →
analyze/ → entry points (train.py, hydra_plugins/, and each package's __main__.py: `python -m stems|analyze`), with
no cycle between modules and no module much over 500 lines. A module's layer is its top-level folder's, so a test
on modules is a test on folders. Read from the source with `ast`, so imports inside functions count too (an import
hidden in a function must not dodge a layer either)."""
from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("stems", "profiler", "experiments", "analyze", "hydra_plugins")  # bottom to top
LAYERS = {"stems": 0, "profiler": 1, "experiments": 2, "analyze": 3}
ENTRY_LAYER = 4  # train.py, hydra_plugins/, and a package's __main__
NAMES = {0: "stems", 1: "profiler", 2: "experiments", 3: "analyze", 4: "entry points"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> int:
    """The layer of the module's top-level folder; entry points (a package's __main__ included) are above all."""
    folder = module.split(".")[0]
    return ENTRY_LAYER if folder not in LAYERS or module.endswith(".__main__") else LAYERS[folder]


def project_modules() -> dict[str, Path]:
    files = [ROOT / "train.py", *(p for pkg in FOLDERS for p in (ROOT / pkg).rglob("*.py"))]
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


def test_every_installed_folder_has_a_layer():
    """A new top-level package must be placed in the layering (here and in docs/DESIGN.md) when it is installed."""
    include = re.search(r"include = \[([^]]*)\]", (ROOT / "pyproject.toml").read_text()).group(1)  # no tomllib on 3.10
    assert set(re.findall(r'"(\w+)\*"', include)) == set(FOLDERS)


def test_no_folder_imports_a_folder_above_it():
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
