"""The import graph of both packages: no cycle between modules, none between the rooms of a package (its
first-level sub-packages and modules), and no module importing upward into its package's front door."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("dspnet_d2", "pretrain")


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


MODULES = _modules()


def _is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def _resolve(module: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if _is_package(module) else module.split(".")[:-1]
    base = base[:len(base) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def _targets(module: str, node) -> list[str]:
    """The package modules an import statement loads (``from p import m`` loads p.m when that is a module)."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        source = _resolve(module, node)
        names = [f"{source}.{alias.name}" if f"{source}.{alias.name}" in MODULES else source for alias in node.names]
    out = []
    for name in names:
        while name and name not in MODULES:  # a.b.c where c is an attribute: the module is a.b
            name = name.rpartition(".")[0]
        if name:
            out.append(name)
    return out


def _imports(top_level_only: bool) -> dict[str, set[str]]:
    """module -> the package modules it imports (at module level only, or anywhere)."""
    graph = {}
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text(), str(path))
        nodes = tree.body if top_level_only else list(ast.walk(tree))
        graph[module] = {t for node in nodes if isinstance(node, (ast.Import, ast.ImportFrom))
                         for t in _targets(module, node) if t != module}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state, stack = {}, []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def _room(module: str) -> str | None:
    """``pretrain.engine.loop`` -> ``pretrain.engine``; a package's own ``__init__`` (its front door) has none."""
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 else None


def test_no_module_imports_itself_back_through_a_cycle():
    cycle = _cycle(_imports(top_level_only=True))
    assert cycle is None, " -> ".join(cycle)


@pytest.mark.parametrize("package", PACKAGES)
def test_the_rooms_of_a_package_import_one_another_without_a_cycle(package):
    rooms = {}
    for module, targets in _imports(top_level_only=False).items():
        if module.split(".")[0] != package or _room(module) is None:
            continue
        rooms.setdefault(_room(module), set()).update(
            _room(t) for t in targets if t.split(".")[0] == package and _room(t) not in (None, _room(module)))
    cycle = _cycle(rooms)
    assert cycle is None, " -> ".join(cycle)


def test_no_module_imports_its_package_front_door_or_runs_back_up_to_an_entry_point():
    upward = []
    for module, targets in _imports(top_level_only=False).items():
        for target in targets:
            front_door = target in PACKAGES and module.split(".")[0] == target and module != target
            entry_point = target.endswith(".__main__")
            if front_door or entry_point:
                upward.append(f"{module} imports {target}")
    assert not upward, upward


def test_pretrain_keeps_no_module_beside_its_rooms_but_its_entry_point():
    loose = sorted(p.name for p in (ROOT / "pretrain").glob("*.py"))
    assert loose == ["__init__.py", "__main__.py"], loose


def test_the_checker_sees_a_cycle_and_resolves_relative_imports():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None
    node = ast.parse("from ..engine import loop").body[0]
    assert _targets("pretrain.methods.base", node) == ["pretrain.engine.loop"]
    node = ast.parse("from .recipe import merge_cfg").body[0]
    assert _targets("pretrain.engine.config", node) == ["pretrain.engine.recipe"]


def test_the_library_never_imports_the_training_application():
    found = [f"{m} imports {t}" for m, ts in _imports(top_level_only=False).items() if m.startswith("dspnet_d2")
             for t in ts if t.startswith("pretrain")]
    assert not found, found


def test_every_tool_runs_the_command_module_of_its_own_name():
    """tools/X.py is a one-line caller of ``<package>.X.main`` (or of the package ``X`` itself)."""
    mismatched = []
    for tool in sorted((ROOT / "tools").glob("*.py")):
        imports = [node for node in ast.parse(tool.read_text()).body if isinstance(node, ast.ImportFrom)
                   and any(alias.name == "main" for alias in node.names)]
        assert len(imports) == 1, f"{tool.name} imports no command's main"
        if imports[0].module.rpartition(".")[2] != tool.stem:
            mismatched.append(f"tools/{tool.name} runs {imports[0].module}")
    assert not mismatched, mismatched
