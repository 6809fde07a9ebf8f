"""dvc.yaml tells the truth: each stage's deps name exactly the project modules its command runs."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from tests.helpers import REPO

STAGES = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def imported_modules(path: Path) -> set[str]:
    """Every `stages.*` module that the file imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module == "stages":
            found |= {f"stages.{alias.name}" for alias in node.names}  # from stages import atomic
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return {name for name in found if name.startswith("stages.")}


def code_of(module: str) -> set[str]:
    """The files of `module` and of every project module it reaches through its imports."""
    seen, todo = set(), [module]
    while todo:
        path = f"{todo.pop().replace('.', '/')}.py"
        if path not in seen:
            seen.add(path)
            todo.extend(imported_modules(REPO / path))
    return seen


@pytest.mark.parametrize("name", sorted(STAGES))
def test_stage_deps_list_exactly_the_modules_its_command_imports(name: str) -> None:
    stage = STAGES[name]
    module = stage["cmd"].removeprefix("python -m ")
    assert stage["cmd"] == f"python -m {module}" and module == f"stages.{name}", stage["cmd"]
    declared = {d for d in stage["deps"] if d.startswith("stages/")}
    needed = code_of(module)
    assert not needed - declared, f"{name}: add to its deps: {sorted(needed - declared)}"
    assert not declared - needed, f"{name}: deps it never imports: {sorted(declared - needed)}"


def test_the_import_walk_sees_imports_inside_functions() -> None:
    # stages.params imports the device module only when an accelerator is asked for, inside main().
    assert "stages/device.py" in code_of("stages.params")
    assert "stages/device.py" not in code_of("stages.config")
