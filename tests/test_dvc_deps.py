"""DVC's one promise: a stage whose code changed is re-run. It holds only if each stage's ``deps``
list every repository file its command imports, so this test computes the import closure of each
stage's ``python -m`` module (with ``ast``, imports inside functions included: they run too) and
asserts that ``deps`` cover it (a folder dep covers every file under it)."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

from conftest import ROOT

PACKAGES = ("pipeline", "stages")  # the repository's importable code


def module_file(name: str) -> Path | None:
    """The repository file of dotted module ``name`` (a package: its ``__init__.py``), or None."""
    if name.split(".")[0] not in PACKAGES:
        return None
    base = ROOT.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_modules(path: Path) -> set[str]:
    """Every dotted module name ``path`` imports, with ``from a import b`` giving ``a`` and ``a.b``
    (``b`` may be a submodule) and every parent package (its ``__init__`` runs first)."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    with_parents = set()
    for name in names:
        parts = name.split(".")
        with_parents.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return with_parents


def import_closure(module: str) -> set[Path]:
    """The repository files that running ``python -m module`` can import."""
    todo, seen = [module], set()
    while todo:
        path = module_file(todo.pop())
        if path is None or path in seen:
            continue
        seen.add(path)
        todo.extend(imported_modules(path))
    return seen


def stages(dvc_file: Path) -> dict[str, dict]:
    """``{stage name: definition}``, a ``foreach`` stage's template taken with a sample item."""
    doc = yaml.safe_load(dvc_file.read_text())
    out = {}
    for name, stage in doc["stages"].items():
        if "foreach" in stage:
            text = yaml.safe_dump(stage["do"]).replace("${item}", "deblur")
            out[f"{name}@deblur"] = yaml.safe_load(text)
        else:
            out[name] = stage
    return out


def dep_paths(stage: dict, base: Path) -> list[Path]:
    """The stage's deps as absolute paths (relative to its ``wdir`` when it sets one)."""
    base = (base / stage.get("wdir", ".")).resolve()
    return [(base / (d if isinstance(d, str) else next(iter(d)))).resolve() for d in stage.get("deps", [])]


def uncovered(dvc_file: Path) -> dict[str, list[str]]:
    """``{stage: [imported files no dep covers]}`` for every stage running ``python -m <module>``."""
    missing = {}
    for name, stage in stages(dvc_file).items():
        found = re.search(r"python -m ([\w.]+)", stage["cmd"])
        if not found:
            continue
        deps = dep_paths(stage, dvc_file.parent)
        files = import_closure(found.group(1))
        assert files, f"{name}: module {found.group(1)} not found in the repository"
        gaps = sorted(str(f.relative_to(ROOT)) for f in files
                      if not any(f == d or d in f.parents for d in deps))
        if gaps:
            missing[name] = gaps
    return missing


@pytest.mark.parametrize("dvc_file", ["dvc.yaml", "sweeps/dvc.yaml"])
def test_every_imported_file_is_a_dep(dvc_file):
    missing = uncovered(ROOT / dvc_file)
    assert not missing, "stages whose deps miss files their command imports (dvc repro would skip them " \
                        "after an edit):\n" + "\n".join(f"  {s}: {', '.join(f)}" for s, f in missing.items())


def test_closure_follows_function_level_and_package_imports():
    """The closure sees imports inside functions and the packages' ``__init__`` files."""
    closure = {str(p.relative_to(ROOT)) for p in import_closure("stages.train")}
    assert {"stages/__init__.py", "stages/train.py", "pipeline/__init__.py", "pipeline/io.py"} <= closure
    assert not any(p.startswith(("tests/", "benchmarks/")) for p in closure)


def test_top_level_metrics_and_plots_follow_tasks_run():
    """One headline metrics file and one training curve (the first seed's) per task of
    ``tasks.run``, and no other metric (``dvc exp show`` stays narrow: no stage declares
    ``metrics:``); the per-noise PSNR plot is deblurring's only (rain and haze have no noise levels)."""
    doc = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    run, seed = params["tasks"]["run"], params["base"]["seeds"][0]
    metrics = [m if isinstance(m, str) else next(iter(m)) for m in doc["metrics"]]
    assert sorted(metrics) == sorted(f"results/{t}/headline.json" for t in run)
    assert not [name for name, stage in doc["stages"].items() if "metrics" in stage.get("do", stage)]
    plots = {next(iter(p)) if isinstance(p, dict) else p for p in doc["plots"]}
    expected = {f"models/{t}/seed-{seed}/history.csv" for t in run} | ({"results/deblur/psnr_by_noise.csv"} if "deblur" in run else set())
    assert plots == expected
