"""The package's layers: every module imports only its own layer or the layers below it."""

import ast
from pathlib import Path

import imgpack

SRC = Path(imgpack.__file__).parent

# Bottom to top. A module may import modules of its own rank or lower, never higher.
RANKS = {
    "imgpack": 0,  # the public API: its readers load lazily, by name
    "imgpack.errors": 0,
    "imgpack.format": 0,
    "imgpack.util": 0,
    "imgpack.params": 1,
    "imgpack.sample": 1,
    "imgpack.parallel": 2,
    "imgpack.read": 3,  # what training imports: never ingest, check or write
    "imgpack.ingest": 4,
    "imgpack.check": 5,
    "imgpack.write": 6,
    "imgpack.project": 6,  # imgpack init: a user's dvc.yaml and params.yaml
    "imgpack.stages": 7,
    "imgpack.cli": 7,
}


def _module(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 else module


def _imports(path: Path):
    """Every imgpack module `path` imports, at its top or inside a function."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names if a.name.startswith("imgpack"))
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "imgpack":
            for alias in node.names:  # `from imgpack.format import tables` names a module
                full = f"{node.module}.{alias.name}"
                is_module = (SRC.parent / full.replace(".", "/")).with_suffix(".py").exists()
                yield full if is_module else node.module


MODULES = {_module(p): p for p in sorted(SRC.rglob("*.py"))}


def test_every_module_belongs_to_a_layer():
    assert [m for m in MODULES if _layer(m) not in RANKS] == []


def test_imports_point_down_the_layers():
    upward = [
        f"{module} ({_layer(module)}) imports {target} ({_layer(target)})"
        for module, path in MODULES.items()
        for target in _imports(path)
        if target != "imgpack" and RANKS[_layer(target)] > RANKS[_layer(module)]
    ]
    assert upward == []


def test_stages_and_cli_never_import_each_other():
    crossing = [
        f"{module} imports {target}"
        for module, path in MODULES.items()
        for target in _imports(path)
        if {_layer(module), _layer(target)} == {"imgpack.stages", "imgpack.cli"}
    ]
    assert crossing == []


def test_no_module_imports_a_private_name_of_another():
    private = [
        f"{module}: from {node.module} import {alias.name}"
        for module, path in MODULES.items()
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("imgpack")
        for alias in node.names
        if alias.name.startswith("_") and alias.name != "__version__"
    ]
    assert private == []


def test_there_are_no_import_cycles():
    graph = {m: {t for t in _imports(p) if t in MODULES and t != m} for m, p in MODULES.items()}
    graph["imgpack"] = set()  # its readers load lazily, on first use
    done: set[str] = set()
    cycles = []

    def visit(module: str, trail: list[str]) -> None:
        if module in trail:
            cycles.append(" -> ".join(trail[trail.index(module) :] + [module]))
            return
        if module in done:
            return
        for target in sorted(graph[module]):
            visit(target, trail + [module])
        done.add(module)

    for module in sorted(graph):
        visit(module, [])
    assert cycles == []


def test_subpackage_init_files_import_nothing():
    # a shard worker imports only what its task needs: an __init__ that imported its
    # siblings would load Arrow into every worker
    inits = [p for p in SRC.rglob("__init__.py") if p.parent != SRC]
    heavy = [
        str(p.relative_to(SRC))
        for p in inits
        for node in ast.parse(p.read_text()).body
        if isinstance(node, (ast.Import, ast.ImportFrom))
    ]
    assert inits and heavy == []


def test_the_top_of_the_package_holds_only_the_public_api_and_shared_basics():
    top = sorted(p.name for p in SRC.glob("*.py"))
    assert top == ["__init__.py", "errors.py", "params.py", "sample.py"]
