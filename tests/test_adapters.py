"""One adapter per tool: MLflow, Optuna and Ray are each imported by one module of the project.

Every ``.py`` file of ``pipeline/``, ``stages/`` and ``benchmarks/`` is parsed with ``ast`` and
each import is checked, wherever it is (module level, inside a function, under ``if``):
``import x``, ``from x import y`` and ``importlib.import_module("x")`` / ``__import__("x")``
with a literal name. A tool's submodules (``mlflow.entities``, ``ray.train.torch``) count as the
tool. Tests (``tests/``) are not walked: they may import the tools to check what the adapters
wrote against the real stores (MLflow runs, Optuna studies, a Ray cluster).
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from conftest import ROOT

ADAPTERS = {"mlflow": "stages/tracking.py", "optuna": "stages/optuna_adapter.py", "ray": "stages/ray_adapter.py"}
WALKED = ("pipeline", "stages", "benchmarks")


def imported_modules(source: str) -> list[tuple[int, str]]:
    """``(line, module)`` of every absolute import in ``source`` (relative imports are the project's)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if name in ("import_module", "__import__"):
                found.append((node.lineno, node.args[0].value))
    return sorted(found)


def tool_of(module: str) -> str | None:
    """The tool ``module`` belongs to (``ray.train.torch`` -> ``ray``), or ``None``."""
    top = module.split(".")[0]
    return top if top in ADAPTERS else None


def project_files() -> list[Path]:
    return sorted(p for folder in WALKED for p in (ROOT / folder).rglob("*.py"))


def test_the_walker_finds_imports_anywhere_in_a_file():
    source = '''
import os, mlflow.entities as me
from ray.train import ScalingConfig
from . import sibling
def f():
    if True:
        import optuna
    importlib.import_module("ray")
    __import__("numpy")
'''
    assert imported_modules(source) == [(2, "mlflow.entities"), (2, "os"), (3, "ray.train"), (7, "optuna"),
                                        (8, "ray"), (9, "numpy")]
    assert [tool_of(m) for m in ("mlflow.entities", "ray.train.torch", "raytracing", "optuna", "os")] == \
           ["mlflow", "ray", None, "optuna", None]


@pytest.mark.parametrize("tool", sorted(ADAPTERS))
def test_each_adapter_exists_and_imports_its_tool(tool):
    adapter = ROOT / ADAPTERS[tool]
    assert adapter.is_file(), f"{ADAPTERS[tool]}: the {tool} adapter is missing"
    assert any(tool_of(m) == tool for _, m in imported_modules(adapter.read_text()))


def test_no_module_but_its_adapter_imports_a_tool():
    files = project_files()
    assert len(files) > 30  # the walk found the project
    wrong = []
    for path in files:
        rel = path.relative_to(ROOT).as_posix()
        for line, module in imported_modules(path.read_text()):
            tool = tool_of(module)
            if tool and rel != ADAPTERS[tool]:
                wrong.append(f"{rel}:{line} imports {module} (only {ADAPTERS[tool]} may import {tool})")
    assert not wrong, "\n".join(wrong)
