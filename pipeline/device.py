"""The one place that picks the compute device and mixed precision."""
from __future__ import annotations

import contextlib

import torch

AMP_MODES = ("auto", "off", "bf16", "fp16")


def pick_device(preference: str = "auto") -> torch.device:
    """``auto``: CUDA when present, else CPU. ``cuda`` without a GPU is an error, not a fallback."""
    if preference == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if preference == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("base.device is 'cuda' but no CUDA device is available (use 'auto' or 'cpu')")
    return torch.device(preference)


def amp_dtype(mode: str, device: torch.device) -> torch.dtype | None:
    """``train.amp`` -> the autocast dtype, ``None`` for full precision. ``auto``: bfloat16 on CUDA
    (its float32 range needs no loss scaling), full precision on CPU (no speed-up there)."""
    if mode not in AMP_MODES:
        raise ValueError(f"unknown amp mode {mode!r}; known: {', '.join(AMP_MODES)}")
    if mode == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    return {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}[mode]


def autocast(device: torch.device, enabled: bool = True, dtype: torch.dtype | None = None
             ) -> contextlib.AbstractContextManager:
    """Autocast for the networks: ``dtype`` when given (CPU or CUDA), else bfloat16 on CUDA and
    nothing on CPU; a no-op when not ``enabled``.

    FFT data steps cast themselves back to float32 (see ``BlurPhysics.data_step``).
    """
    if dtype is None and device.type == "cuda":
        dtype = torch.bfloat16
    if not enabled or dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def grad_scaler(dtype: torch.dtype | None, device: torch.device) -> torch.amp.GradScaler | None:
    """A loss scaler for float16 training (its 5-bit exponent underflows small gradients);
    ``None`` for bfloat16 and full precision, which need none."""
    return torch.amp.GradScaler(device.type) if dtype == torch.float16 else None


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``t`` on ``device``: from pinned memory, without blocking, when that is a GPU (the copy
    overlaps the previous step's kernels)."""
    if device.type == "cuda" and t.device.type == "cpu":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def tune_for_fixed_shapes(device: torch.device) -> None:
    """Let cuDNN pick the fastest convolution algorithms for the shapes it sees: worth it when they
    repeat (training patches are all ``patch_size``), costly when each image differs (evaluation)."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True


def set_threads(threads: int) -> None:
    if threads > 0:
        torch.set_num_threads(threads)
