"""Images: the built-in scikit-image set, conversions, deterministic splits (no torch here)."""
from __future__ import annotations

import hashlib

import numpy as np
from skimage import color, transform

# Natural photographs that ship inside scikit-image (no download). ``cat`` is ``chelsea`` again,
# so it is left out; ``camera`` is Set12's ``01`` (hold it out of training when benchmarking).
# ``clock`` is left out of every split: it is itself a motion-blurred photograph, so its "ground
# truth" scores under-deblurring best (in validation it pulled the tuned schedules towards fewer
# iterations; in test it would reward them).
SKIMAGE_DEFAULT = (
    "camera", "astronaut", "coffee", "chelsea", "rocket", "moon", "brick", "grass", "gravel", "coins",
    "text", "page", "hubble_deep_field", "immunohistochemistry", "retina", "stereo_motorcycle",
)


def load_skimage(name: str) -> np.ndarray:
    """A ``skimage.data`` image as float32 ``(H, W, C)`` in [0, 1] (``C`` 1 or 3)."""
    import skimage.data

    loader = getattr(skimage.data, name, None)
    if loader is None or not callable(loader):
        raise ValueError(f"'{name}' is not an image in skimage.data")
    img = loader()
    if isinstance(img, tuple):  # stereo_motorcycle: (left, right, disparity)
        img = img[0]
    img = np.asarray(img)
    img = img.astype(np.float32) / (255.0 if img.dtype == np.uint8 else 1.0)
    if img.ndim == 2:
        img = img[..., None]
    return img[..., :3]


def to_channels(img: np.ndarray, gray: bool) -> np.ndarray:
    """``(H, W, C)`` -> ``(H, W, 1)`` grey (``skimage.color.rgb2gray``: the Rec. 709 luminance
    weights 0.2125, 0.7154, 0.0721) or ``(H, W, 3)``."""
    if gray:
        return img if img.shape[-1] == 1 else color.rgb2gray(img)[..., None].astype(np.float32)
    return np.repeat(img, 3, axis=-1) if img.shape[-1] == 1 else img


def limit_size(img: np.ndarray, max_side: int) -> np.ndarray:
    """Downscale ``(H, W, C)`` with anti-aliasing so that its longer side is at most ``max_side``."""
    h, w = img.shape[:2]
    if max_side <= 0 or max(h, w) <= max_side:
        return img
    scale = max_side / max(h, w)
    out = transform.resize(img, (max(1, round(h * scale)), max(1, round(w * scale))), anti_aliasing=True)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def assign_splits(names: list[str], n_test: int, n_val: int, seed: int, holdout: tuple[str, ...] = ()) -> dict[str, str]:
    """Deterministic split: ``holdout`` names go to test first, the rest by a seeded shuffle.

    The shuffle key is a hash of (seed, name), so adding an image does not reshuffle the others.
    """
    unknown = [h for h in holdout if h not in names]
    if unknown:
        raise ValueError(f"prepare.holdout (or the task's tasks.<task>.prepare.holdout) names images that are "
                         f"not in the dataset: {unknown}")
    if n_test + n_val >= len(names):
        raise ValueError(f"{len(names)} images cannot fill test={n_test}, val={n_val} and leave any for training")
    if len(holdout) > n_test:
        raise ValueError(f"prepare.holdout has {len(holdout)} images, more than split.test={n_test}")
    order = sorted((n for n in names if n not in holdout),
                   key=lambda n: hashlib.sha256(f"{seed}:{n}".encode()).hexdigest())
    ranked = list(holdout) + order
    return {n: ("test" if i < n_test else "val" if i < n_test + n_val else "train") for i, n in enumerate(ranked)}


def hwc_to_chw(img: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.transpose(img, (2, 0, 1)), dtype=np.float32)


def chw_to_hwc(img: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.transpose(img, (1, 2, 0)))
