"""What every stage does at its edge: parse argv, load and validate params, set up logging."""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Callable

import yaml

from pipeline.config import ConfigError, Params, params_from_dict
from pipeline.io import InputError

log = logging.getLogger("hyperguide")


def read_yaml(path: Path, what: str):
    """The YAML document at ``path``; ConfigError naming the file when it is missing or not YAML."""
    if not path.exists():
        raise ConfigError(f"{path}: no such {what}")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc


def load_params(path: str | Path) -> Params:
    """Read and validate a params file; every error names the file and the key."""
    path = Path(path)
    data = read_yaml(path, "params file")
    try:
        return params_from_dict(data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--params", default="params.yaml", help="params file (validated; unknown keys are errors)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    for noisy in ("alembic", "mlflow", "urllib3", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def run_main(main: Callable[[], None]) -> None:
    """Run a stage's ``main``; a bad input or config ends with one clear line and exit code 2."""
    setup_logging()
    try:
        main()
    except (ConfigError, InputError) as exc:
        log.error("%s", exc)
        sys.exit(2)
