"""The package's layers: every `comma` module imports only its own layer or layers below it
(docs/architecture.md), so the import graph has no cycles hidden by function-local imports."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "comma"

# Lowest first. A module may import modules of its own layer or of a lower one.
LAYERS = (
    ("comma.errors", "comma.io", "comma.tasks", "comma.threads", "comma.workflow_config"),
    ("comma.data",),
    ("comma.mini",),
    ("comma.nn", "comma.ratio", "comma.dependency"),
    ("comma.alignment",),
    ("comma.models",),
    ("comma.engine",),
    ("comma.stages",),
    ("comma.analysis",),
)


def layer_of(module: str) -> int:
    for level, prefixes in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return level
    raise AssertionError(f"{module} belongs to no layer: add it to LAYERS and the docs")


def comma_modules() -> dict[str, Path]:
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    return modules


def imported_modules(path: Path) -> set[str]:
    """Every `comma...` module `path` imports, at any depth of the file (also in functions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("comma")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("comma"):
            found.add(node.module)
            # `from comma.models import comma` imports the submodule comma.models.comma
            found |= {f"{node.module}.{a.name}" for a in node.names}
    modules = comma_modules()
    return {m for m in found if m in modules}


@pytest.mark.parametrize("module", sorted(comma_modules()))
def test_imports_point_down(module):
    if module == "comma":
        return
    level = layer_of(module)
    upward = sorted(
        imported
        for imported in imported_modules(comma_modules()[module])
        if imported != "comma" and layer_of(imported) > level
    )
    assert not upward, f"{module} (layer {level}) imports the higher layers' {upward}"


def test_layer_check_catches_an_upward_import(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from comma.stages.comma import train_comma\n")
    assert "comma.stages.comma" in imported_modules(source)
    assert layer_of("comma.stages.comma") > layer_of("comma.models.comma")


def test_no_import_cycles_between_modules():
    modules = comma_modules()
    graph = {m: imported_modules(p) - {m, "comma"} for m, p in modules.items()}
    # Package __init__ files import nothing of their own, so an edge to a package is no cycle.
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in graph.get(node, ()):
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*trail, node, nxt]))
            if nxt not in state:
                visit(nxt, [*trail, node])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [])


# What building the DAG must not import: seconds each, paid by every `snakemake` call.
HEAVY_FOR_THE_DAG = ("torch", "pandas", "matplotlib", "scipy")


def test_the_workflow_imports_no_heavy_library_to_build_its_dag():
    """The `comma` modules that Snakefile and rules/*.smk import, in a fresh interpreter, as
    Snakemake parses them (docs/architecture.md, house style: a light DAG build)."""
    import subprocess
    import sys

    repo = PACKAGE.parent
    sources = [repo / "Snakefile", *sorted((repo / "rules").glob("*.smk"))]
    imported = sorted(
        {
            line.split()[1]
            for source in sources
            for line in source.read_text().splitlines()
            if line.startswith(("from comma", "import comma"))
        }
    )
    assert "comma.data.manifest" in imported and "comma.analysis.calibration_plan" in imported
    heavy = set(HEAVY_FOR_THE_DAG)
    probe = f"import sys, {', '.join(imported)}; print(sorted(set(sys.modules) & {heavy!r}))"
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=repo, check=True
    )
    assert result.stdout.strip() == "[]", f"{imported} import {result.stdout.strip()}"
