"""The layout shows the architecture: packages depend only on the layers beneath them, no module imports another
that (directly or not) imports it back, even for annotations, and no module outgrows one concept."""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
# Each layer may import from its own and the layers before it.
LAYERS = [
    {"bayeslm", "bayeslm.config", "bayeslm.registry", "bayeslm.progress", "bayeslm.weights", "bayeslm.outputs"},
    {"bayeslm.parallel"},
    {"bayeslm.distributions"},
    {"bayeslm.modelling"},
    {"bayeslm.samplers"},
    {"bayeslm.measurement"},
    {"bayeslm.training"},
    {"bayeslm.api", "bayeslm.experiments"},
    {"bayeslm.cli", "bayeslm.__main__", "bayeslm.preflight"},
]
MAX_LINES = 400


def _modules() -> dict[str, Path]:
    out = {}
    for path in (SRC / "bayeslm").rglob("*.py"):
        parts = path.relative_to(SRC).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _imports(name: str, path: Path, modules: dict, annotations: bool = False) -> set[str]:
    """Every bayeslm module `name` imports when it runs, at the top or inside a function (`from bayeslm.x import
    y` counts y when y is a module, else bayeslm.x); with `annotations`, those for annotations only too."""
    found = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text())
    # Imports for annotations only (under `if TYPE_CHECKING:`) never run.
    typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If) and not annotations
                   and getattr(block.test, "id", None) == "TYPE_CHECKING" for n in ast.walk(block)}
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("bayeslm"))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1]
                                + ([base] if base else []))
            if base.startswith("bayeslm"):
                for alias in node.names:
                    found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
    return {m for m in found if m in modules and m != name}


def _layer(name: str) -> int:
    for depth in range(name.count(".") + 1, 0, -1):
        prefix = ".".join(name.split(".")[:depth])
        for i, layer in enumerate(LAYERS):
            if prefix in layer:
                return i
    raise AssertionError(f"{name} belongs to no layer: add its package to LAYERS")


def test_packages_import_only_the_layers_beneath_them():
    modules = _modules()
    wrong = [f"{name} imports {other}" for name, path in modules.items() for other in _imports(name, path, modules)
             if name != "bayeslm" and _layer(other) > _layer(name)]
    assert not wrong, wrong


def test_no_module_imports_itself_back():
    """Not even for annotations (`if TYPE_CHECKING:`): a circle there is a circle in the design."""
    modules = _modules()
    graph = {name: _imports(name, path, modules, annotations=True) for name, path in modules.items()
             if name != "bayeslm"}
    state, cycles = {}, []

    def visit(node, stack):
        state[node] = "open"
        for nxt in graph.get(node, ()):
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for node in graph:
        if node not in state:
            visit(node, [node])
    assert not cycles, cycles


@pytest.mark.parametrize("path", sorted((SRC / "bayeslm").rglob("*.py")), ids=lambda p: str(p.relative_to(SRC)))
def test_no_module_outgrows_one_concept(path):
    assert len(path.read_text().splitlines()) <= MAX_LINES


def test_no_function_outgrows_one_screen():
    """A function longer than 60 lines does several things: each gets its own, named."""
    long = []
    for path in (SRC / "bayeslm").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 60:
                long.append(f"{path.relative_to(SRC)}:{node.lineno} {node.name}")
    assert not long, long


def test_editors_see_every_public_name_with_its_signature():
    """`bl.KLRL` loads lazily (`import bayeslm` imports no torch); the same names imported under TYPE_CHECKING let
    editors and type checkers see each one's signature."""
    import bayeslm

    tree = ast.parse((SRC / "bayeslm" / "__init__.py").read_text())
    block = next(node for node in tree.body
                 if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING")
    seen = {alias.asname or alias.name for node in ast.walk(block) if isinstance(node, ast.ImportFrom)
            for alias in node.names}
    assert seen == set(bayeslm.__all__)


@pytest.mark.parametrize("init", sorted((SRC / "bayeslm").rglob("__init__.py")),
                         ids=lambda p: str(p.parent.relative_to(SRC)))
def test_each_package_map_names_every_module(init):
    """A package's docstring is the reader's map of it: every module and subpackage in it is named."""
    doc = ast.get_docstring(ast.parse(init.read_text())) or ""
    parts = [p for p in init.parent.iterdir() if (p.suffix == ".py" and p.stem not in ("__init__", "__main__"))
             or (p.is_dir() and (p / "__init__.py").is_file())]
    assert not [p.name for p in parts if p.stem not in doc]
