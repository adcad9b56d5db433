"""Command ``apply``: merge an overrides file (a profile, a sweep's ``best.yaml``) into ``params.yaml``.

    python -m stages.apply profiles/gpu.yaml              # the paper's scale, for a GPU
    python -m stages.apply sweeps/results/tiny/best.yaml  # a sweep's winner (= stages.sweep --apply tiny)
    python -m stages.apply profiles/gpu.yaml --dry-run    # print what would change

The overrides are a mapping shaped like ``params.yaml`` (sections, ``tasks.<task>``), deep-merged
key by key: what they do not name stays as it is, comments included (a round-trip YAML edit). The
result is validated as every stage validates it before the file is replaced (atomically): an
unknown key or a value out of range is refused, naming the key, and ``params.yaml`` is left as
it was. Then ``dvc repro`` (or ``dvc exp run``) trains exactly that configuration.
"""
from __future__ import annotations

import argparse
import io as _io
from pathlib import Path
from typing import Any

from pipeline import io
from pipeline.config import ConfigError, flatten, params_from_dict
from stages.common import log, read_yaml, run_main


def _merge_into(doc: Any, overrides: dict) -> None:
    """Deep-merge ``overrides`` into the round-trip mapping ``doc`` in place (comments kept)."""
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(doc.get(key), dict):
            _merge_into(doc[key], value)
        else:
            doc[key] = value


def merged_text(params_text: str, overrides: dict) -> str:
    """``params_text`` (a params.yaml) with ``overrides`` merged in, its comments and layout kept
    wherever the overrides do not reach."""
    from ruamel.yaml import YAML

    yaml = YAML()  # round trip: comments, key order, flow style
    yaml.preserve_quotes = True
    yaml.width = 4096  # never re-wrap long lines
    doc = yaml.load(params_text) or {}
    _merge_into(doc, overrides)
    out = _io.StringIO()
    yaml.dump(doc, out)
    return out.getvalue()


def changes(before: dict, after: dict) -> dict[str, tuple[Any, Any]]:
    """``{dotted key: (old, new)}`` of every value that differs (missing: ``None``)."""
    a, b = flatten(before or {}), flatten(after or {})
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


def apply_file(params_path: Path, overrides_path: Path, dry_run: bool = False) -> dict[str, tuple[Any, Any]]:
    """Merge the overrides at ``overrides_path`` into ``params_path`` (validated, atomic); returns
    what changed. A ConfigError (and the file untouched) when the result would not validate."""
    import yaml

    overrides = read_yaml(overrides_path, "overrides file")
    if not isinstance(overrides, dict) or not overrides:
        raise ConfigError(f"{overrides_path}: expected a mapping of params sections, got {type(overrides).__name__}")
    text = params_path.read_text()
    new_text = merged_text(text, overrides)
    new = yaml.safe_load(new_text)
    try:
        params_from_dict(new)
    except ConfigError as exc:
        raise ConfigError(f"{overrides_path} merged into {params_path}: {exc}; {params_path} is unchanged") from exc
    diff = changes(yaml.safe_load(text), new)
    if not dry_run and diff:
        io.write_text(params_path, new_text)
    return diff


def report(diff: dict[str, tuple[Any, Any]], params_path: Path, dry_run: bool) -> None:
    verb = "would change" if dry_run else "changed"
    if not diff:
        log.info("%s: nothing to change", params_path)
    for key, (old, new) in diff.items():
        log.info("%s %s: %s -> %s", verb, key, old, new)
    if diff and not dry_run:
        log.info("%s: %d value(s) changed; `dvc repro` trains this configuration", params_path, len(diff))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--params", default="params.yaml", help="the params file to change (default: params.yaml)")
    p.add_argument("overrides", help="a YAML mapping shaped like params.yaml (a profile, a sweep's best.yaml)")
    p.add_argument("--dry-run", action="store_true", help="print what would change, write nothing")
    args = p.parse_args()
    params_path = Path(args.params)
    diff = apply_file(params_path, Path(args.overrides), args.dry_run)
    report(diff, params_path, args.dry_run)


if __name__ == "__main__":
    run_main(main)
