"""Real-style pair folders (rain/norain, hazy/clear: Rain100H-style names) with a tiny learned and a
tiny unguided model beside them, shared by tests/stages/test_benchmark_pairs.py and
tests/hostile/test_pairs.py."""
from __future__ import annotations

import numpy as np

from pipeline import io
from pipeline.checkpoint import save_model
from pipeline.config import ModelConfig
from pipeline.data import limit_size, load_skimage, to_channels
from pipeline.models.factory import build_model
from pipeline.synthesis import TaskSpec, degrade_task

CFG = ModelConfig(stages=2, denoiser_width=8, denoiser_dilations=(1, 2, 1), proxy_width=8)
LAYOUT = {"derain": ("rain", "norain"), "dehaze": ("hazy", "clear")}


def make_pairs(root, task: str, names=("coffee", "astronaut")):
    degraded, clean = LAYOUT[task]
    for i, name in enumerate(names):
        x = limit_size(to_channels(load_skimage(name), gray=False), 40)
        s = degrade_task(np.ascontiguousarray(x.transpose(2, 0, 1)), TaskSpec(task), np.random.default_rng(i))
        io.write_image(root / degraded / f"{degraded}-{i + 1}.png", s.y.transpose(1, 2, 0))
        io.write_image(root / clean / f"{clean}-{i + 1}.png", x)  # Rain100H-style prefixes
    for guidance in ("learned", "none"):
        cfg = ModelConfig(**{**CFG.__dict__, "guidance": guidance})
        save_model(root / f"{guidance}.pt", build_model(cfg, 3, task=task), cfg, 3, task)
    return root
