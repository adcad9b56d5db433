"""Training patches: fresh degraded crops every batch, from the same code as the degrade stage
(or crops of real pairs, :class:`PairPatchSampler`)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from pipeline.generators.kernels import KernelSample
from pipeline.physics.haze import transmission_correction
from pipeline.synthesis import TaskSpec, batch_tensors, degrade, degrade_task


@dataclass(frozen=True)
class NoiseSpec:
    """How noise is drawn for training patches (levels in percent)."""

    low: float
    high: float
    mode: str = "constant"
    spread: float = 0.8


class _Crops:
    """Random ``P x P`` crops (with a random flip and quarter turn) of ``(C, H, W)`` images."""

    has_targets = True  # degraded batches carry the guidance truth (``target``) the proxy learns
    def __init__(self, images: list[np.ndarray], patch_size: int, rng: np.random.Generator):
        self.images = [im for im in images if min(im.shape[-2:]) >= patch_size]
        if not self.images:
            raise ValueError(f"no training image is at least {patch_size}x{patch_size} (train.patch_size)")
        self.p, self.rng = patch_size, rng

    def window(self, image: np.ndarray) -> tuple[int, int, bool, int]:
        """``(top, left, flip, quarter turns)`` drawn for ``image``."""
        h, w = image.shape[-2:]
        top, left = self.rng.integers(h - self.p + 1), self.rng.integers(w - self.p + 1)
        return int(top), int(left), bool(self.rng.uniform() < 0.5), int(self.rng.integers(4))

    def cut(self, array: np.ndarray, window: tuple[int, int, bool, int]) -> np.ndarray:
        """The window of ``array (C, H, W)``: ``(C, P, P)``."""
        top, left, flip, turns = window
        patch = array[:, top : top + self.p, left : left + self.p]
        if flip:
            patch = patch[:, :, ::-1]
        return np.ascontiguousarray(np.rot90(patch, k=turns, axes=(1, 2)))

    def clean_patch(self) -> np.ndarray:
        img = self.images[self.rng.integers(len(self.images))]
        return self.cut(img, self.window(img))

    def clean_batch(self, batch_size: int) -> torch.Tensor:
        """``(B, C, P, P)`` clean patches (for pre-training the denoiser)."""
        return torch.from_numpy(np.stack([self.clean_patch() for _ in range(batch_size)]))


class PatchSampler(_Crops):
    """Fresh blurred, noisy training patches every batch, from a fixed, seeded kernel bank.

    Args:
        images: ``(C, H, W)`` clean training images.
        kernels: the kernel bank drawn from.
        noise: noise levels and mode.
        patch_size: ``P``; images smaller than that are skipped.
        kernel_size: kernels are zero-padded to ``(kernel_size, kernel_size)`` in a batch.
        rng: the only source of randomness (crop, flip, kernel, level, noise).
    """

    def __init__(self, images: list[np.ndarray], kernels: list[KernelSample], noise: NoiseSpec,
                 patch_size: int, kernel_size: int, rng: np.random.Generator):
        super().__init__(images, patch_size, rng)
        self.kernels, self.noise, self.kernel_size = kernels, noise, kernel_size

    def blur_batch(self, batch_size: int) -> dict[str, torch.Tensor]:
        """Degraded patches: ``x, y (B, C, P, P)``, ``sigma (B, 1, P, P)``, ``kernel (B, k, k)``."""
        clean, samples = [], []
        for _ in range(batch_size):
            x = self.clean_patch()
            kernel = self.kernels[self.rng.integers(len(self.kernels))]
            level = float(self.rng.uniform(self.noise.low, self.noise.high)) / 100.0
            samples.append(degrade(x, kernel, level, self.noise.mode, self.noise.spread, self.rng))
            clean.append(x)
        return batch_tensors(samples, clean, self.kernel_size)

    def degraded_batch(self, batch_size: int) -> dict[str, torch.Tensor]:
        return self.blur_batch(batch_size)


class TaskPatchSampler(_Crops):
    """Fresh rainy or hazy training patches: the whole image is degraded (so streak lengths and
    depth fields have the scale they have in the degrade stage), then cropped.

    Returns ``x, y (B, C, P, P)`` and ``sigma (B, 1, P, P)``: the guidance target (the crop of
    the streak density; for haze the transmission correction of the patch itself, as the model
    sees it: the crop's true ``t`` against the dark channel prior on the crop).
    """

    def __init__(self, images: list[np.ndarray], spec: TaskSpec, patch_size: int, rng: np.random.Generator):
        super().__init__(images, patch_size, rng)
        self.spec = spec

    def degraded_batch(self, batch_size: int) -> dict[str, torch.Tensor]:
        xs, ys, targets = [], [], []
        for _ in range(batch_size):
            img = self.images[self.rng.integers(len(self.images))]
            sample = degrade_task(img, self.spec, self.rng, with_target=self.spec.task == "derain")
            window = self.window(img)
            xs.append(self.cut(img, window))
            ys.append(self.cut(sample.y, window))
            targets.append(self.cut(sample.truth["t"] if self.spec.task == "dehaze" else sample.target, window))
        x, y = torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ys))
        targets = torch.from_numpy(np.stack(targets))
        target = transmission_correction(y, targets) if self.spec.task == "dehaze" else targets
        return {"x": x, "y": y, "target": target}


class PairPatchSampler(_Crops):
    """Training patches cut from real pairs (``prepare.source: pairs``): the same window of a clean
    image and of its observation. Returns ``x, y (B, C, P, P)`` and no ``target``: a real pair
    carries no guidance truth, so the proxy learns from the outer loss alone (``has_targets``).

    Args:
        images: ``(C, H, W)`` clean training images.
        observed: their real observations, in the same order and of the same shapes.
        patch_size: ``P``; pairs smaller than that are skipped.
        rng: the only source of randomness (image, crop, flip, turn).
    """

    has_targets = False

    def __init__(self, images: list[np.ndarray], observed: list[np.ndarray], patch_size: int, rng: np.random.Generator):
        if len(images) != len(observed) or any(x.shape != y.shape for x, y in zip(images, observed)):
            raise ValueError("each clean training image needs a real observation of its own shape")
        keep = [i for i, im in enumerate(images) if min(im.shape[-2:]) >= patch_size]
        super().__init__(images, patch_size, rng)  # (refuses when none is large enough)
        self.observed = [observed[i] for i in keep]

    def degraded_batch(self, batch_size: int) -> dict[str, torch.Tensor]:
        xs, ys = [], []
        for _ in range(batch_size):
            i = self.rng.integers(len(self.images))
            window = self.window(self.images[i])
            xs.append(self.cut(self.images[i], window))
            ys.append(self.cut(self.observed[i], window))
        return {"x": torch.from_numpy(np.stack(xs)), "y": torch.from_numpy(np.stack(ys))}


# what the trainer and the batch workers draw from
Sampler = PatchSampler | TaskPatchSampler | PairPatchSampler
