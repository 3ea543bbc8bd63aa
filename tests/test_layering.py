"""No module of `bmvit` imports from a higher layer.

Layers, top to bottom (docs/architecture.md):
cli > inference > engine > evaluation > models, data > losses, config > boxes, errors, atomic.
A module may import from its own layer or any layer below. Every import statement counts,
function-local ones included (a lazy import is not an excuse for an upward one), and so does a
string naming a bmvit module (what `importlib.import_module` is given). The package roots
(`bmvit/__init__.py`, `bmvit/__main__.py`) are the public entry points and sit above everything.

The one exception, :data:`ALLOWED`, is stated with its reason.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import bmvit

PACKAGE = Path(bmvit.__file__).parent

LAYERS = {
    "cli": 7,
    "inference": 6,
    "engine": 5,
    "evaluation": 4,
    "models": 3,
    "data": 3,
    "losses": 2,
    "config": 2,
    "boxes": 1,
    "errors": 1,
    "atomic": 1,
}
ROOTS = {"__init__", "__main__"}
# (module, imported module) -> why the upward edge is accepted
ALLOWED = {
    ("bmvit.config", m): "config.CHOICES validates option names against the table of the module that implements "
                          "them (issue 17 item 5), imported by name only when a config sets such a key"
    for m in ("bmvit.models.build", "bmvit.models.token_selection", "bmvit.models.heads")
}
_MODULE_NAME = re.compile(r"^bmvit(\.[a-z_]+)+$")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imported(tree: ast.AST, module: str, is_package: bool) -> list[tuple[int, str]]:
    """(line, absolute module name) of every `bmvit` import in the tree."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            if node.module is None or node.level:
                # `from . import x` / `from .a import b`: the names may be submodules
                found += [(node.lineno, f"{name}.{a.name}") for a in node.names]
            else:
                found.append((node.lineno, name))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and _MODULE_NAME.match(node.value):
            found.append((node.lineno, node.value))  # a module imported by name
    return [(line, name) for line, name in found if name == "bmvit" or name.startswith("bmvit.")]


def _layer(name: str) -> int | None:
    parts = name.split(".")
    if len(parts) < 2:
        return None
    return LAYERS.get(parts[1])


def _violations() -> list[str]:
    bad = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = _module_name(path)
        top = module.split(".")[1] if "." in module else None
        if top is None or top in ROOTS:
            continue
        assert top in LAYERS, f"{path}: top-level module {top!r} has no layer; add it to LAYERS"
        own = LAYERS[top]
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for line, name in _imported(tree, module, path.name == "__init__.py"):
            layer = _layer(name)
            if layer is not None and layer > own and (module, name) not in ALLOWED:
                rel = path.relative_to(PACKAGE.parent)
                bad.append(f"{rel}:{line}: {top} (layer {own}) imports {name} (layer {layer})")
    return bad


def test_no_module_imports_from_a_higher_layer():
    bad = _violations()
    assert not bad, "upward imports:\n" + "\n".join(bad)


def test_the_check_sees_an_upward_import():
    # the parser resolves absolute, relative and function-local imports
    src = (
        "from bmvit.engine.train import x\n"
        "def f():\n"
        "    from ..inference import detector\n"
        "import bmvit.cli.main\n"
    )
    names = [n for _, n in _imported(ast.parse(src), "bmvit.models.heads", False)]
    assert sorted(names) == ["bmvit.cli.main", "bmvit.engine.train", "bmvit.inference.detector"]
    assert all(_layer(n) > LAYERS["models"] for n in names)
    dynamic = 'import importlib\nTABLE = {"k": ("bmvit.inference.detector", "X")}\n'
    assert [n for _, n in _imported(ast.parse(dynamic), "bmvit.models.heads", False)] == ["bmvit.inference.detector"]


def test_allowed_exceptions_are_still_needed():
    # an exception that no longer occurs is removed, not kept "just in case"
    seen = set()
    for path in sorted(PACKAGE.rglob("*.py")):
        module = _module_name(path)
        tree = ast.parse(path.read_text(encoding="utf-8"))
        seen |= {(module, name) for _, name in _imported(tree, module, path.name == "__init__.py")}
    assert set(ALLOWED) <= seen, set(ALLOWED) - seen
