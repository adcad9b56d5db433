"""The one place that picks the compute device and mixed precision."""
from __future__ import annotations

import contextlib

import torch


def pick_device(preference: str = "auto") -> torch.device:
    """``auto``: CUDA when present, else CPU. ``cuda`` without a GPU is an error, not a fallback."""
    if preference == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if preference == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("base.device is 'cuda' but no CUDA device is available (use 'auto' or 'cpu')")
    return torch.device(preference)


def autocast(device: torch.device, enabled: bool = True) -> contextlib.AbstractContextManager:
    """bfloat16 autocast for the convolutions on CUDA; a no-op on CPU (no speed-up there).

    FFT data steps cast themselves back to float32 (see ``BlurPhysics.data_step``).
    """
    if device.type == "cuda" and enabled:
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def set_threads(threads: int) -> None:
    if threads > 0:
        torch.set_num_threads(threads)
