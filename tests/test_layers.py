"""The package's layering: no import loops, and the rules of ARCHITECTURE.md.

Static checks read every module's imports with ``ast`` (function-level imports
included, ``if TYPE_CHECKING:`` blocks excluded); the dynamic checks import modules in
a fresh interpreter and look at ``sys.modules``.
"""

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "fcit_flower"
MAX_LINES = 400


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {
    _module_name(p): p for p in sorted(PACKAGE.rglob("*.py")) if ".venv" not in p.parts
}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(path: Path) -> set[str]:
    """The fcit_flower modules ``path`` imports at run time."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("fcit_flower"))
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
            "fcit_flower"
        ):
            for alias in node.names:
                child = f"{node.module}.{alias.name}"
                found.add(child if child in MODULES else node.module)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    return found & set(MODULES)


GRAPH = {name: _imports(path) for name, path in MODULES.items()}


def _reachable(start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for target in GRAPH[todo.pop()]:
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


def test_no_import_loops():
    loops = sorted(name for name in GRAPH if name in _reachable(name))
    assert loops == [], f"modules on an import loop: {loops}"


@pytest.mark.parametrize(
    ("layer", "forbidden"),
    [
        ("fcit_flower.tasks", ("fcit_flower.models",)),
        (
            "fcit_flower.strategies",
            ("fcit_flower.methods", "fcit_flower.models", "fcit_flower.training"),
        ),
        (
            "fcit_flower.protocol",
            ("fcit_flower.methods", "fcit_flower.models", "fcit_flower.strategies"),
        ),
    ],
)
def test_lower_layers_do_not_reach_upper_ones(layer, forbidden):
    bad = {
        name: sorted(t for t in _reachable(name) if t.startswith(forbidden))
        for name in GRAPH
        if name == layer or name.startswith(layer + ".")
    }
    assert not {k: v for k, v in bad.items() if v}


def test_protocol_imports_only_flower_app_and_numpy():
    tree = ast.parse(MODULES["fcit_flower.protocol"].read_text())
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            roots.add(node.module or "")
    third_party = {r for r in roots if r.split(".")[0] not in sys.stdlib_module_names}
    assert third_party == {"flwr.app", "numpy"}


def _loaded_after(code: str) -> list[str]:
    script = f"import json, sys\n{code}\nprint(json.dumps(sorted(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=True,
        cwd=PACKAGE.parent,
    )
    return json.loads(result.stdout.splitlines()[-1])


def test_strategies_and_protocol_load_no_torch():
    strategies = [n for n in MODULES if n.startswith("fcit_flower.strategies.")]
    imports = "\n".join(f"import {n}" for n in ["fcit_flower.protocol", *strategies])
    loaded = _loaded_after(imports)
    assert "torch" not in loaded and "transformers" not in loaded


def test_the_client_app_module_loads_no_torch():
    # Flower imports it in a fresh process per message; with a site worker
    # (site_worker.py) that process must stay cheap.
    loaded = _loaded_after("import fcit_flower.client_app")
    assert "torch" not in loaded and "transformers" not in loaded
    assert "fcit_flower.client_handlers" not in loaded


def test_a_client_process_loads_no_strategy():
    loaded = _loaded_after(
        "import fcit_flower.client_handlers\n"
        "from fcit_flower.methods.registry import get_method, method_names\n"
        "for name in method_names(): get_method(name)"
    )
    assert "fcit_flower.methods.disco" in loaded  # every method module was loaded
    assert [m for m in loaded if m.startswith("fcit_flower.strategies")] == []


def test_no_module_above_the_size_limit():
    sizes = {n: len(p.read_text().splitlines()) for n, p in MODULES.items()}
    assert {n: s for n, s in sizes.items() if s > MAX_LINES} == {}
