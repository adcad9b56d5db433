"""The trained deblurring model's inference pass, and its packaged form for MLflow.

:func:`unfolded` is the model's forward pass with its networks replaceable (the enhance
computation in :mod:`pipeline.enhance` passes tiled ones); :class:`PackagedDeblur` is that pass,
untiled, behind the one-array ``forward`` MLflow's PyTorch flavour serves. Kept apart from
:mod:`pipeline.enhance` so that what the train stage imports to log its model does not include
the enhance command's image handling and tiling.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.models.unfolded import UnfoldedHQS, constant_maps, hqs
from pipeline.physics.blur import BlurPhysics
from pipeline.physics.noise import estimated_level_map


def even_sized(proxy: nn.Module, y: torch.Tensor) -> torch.Tensor:
    """The proxy on ``y (B, C, H, W)`` replicate-padded to even ``H, W``, cropped back: ``(B, 1, H, W)``.

    The proxy samples a stride-2 Haar band and upsamples by 2. On an odd size its own padding
    makes the upsampling factor ``ceil(H/2) / H`` instead of 1/2, a sub-pixel drift across the
    image that tiles cannot reproduce; on an even size (as in training) every tile sees the
    same grid as the whole image, so tiled and untiled maps agree.
    """
    h, w = y.shape[-2:]
    # no branch on the parity: the packaged model is exported with symbolic sizes
    return proxy(F.pad(y, (0, w % 2, 0, h % 2), mode="replicate"))[..., :h, :w]


@dataclass
class Enhanced:
    x: torch.Tensor  # (B, C, H, W) the restored image, float32, not clipped
    noise_map: torch.Tensor  # (B, 1, H, W) the proxy's noise-level map ([0, 1] units): the guidance's source


def unfolded(model: UnfoldedHQS, denoiser: nn.Module, proxy: nn.Module, physics: BlurPhysics) -> Enhanced:
    """The model's forward pass with its networks replaced (e.g. by tiled ones), the proxy run
    through :func:`even_sized`. ``physics`` bound to ``y (B, C, H, W)``."""
    if model.guidance_mode == "oracle":
        raise ValueError("a model with guidance 'oracle' needs the true noise map: it cannot restore real images")
    if model.guidance_mode == "none":
        out = hqs(physics, denoiser, model.penalties(None), constant_maps(model.nominal_sigmas))
        return Enhanced(out.x.float(), out.guidance[-1].float())
    if getattr(model, "proxy_sharing", "once") != "once":
        # the stage proxies run on each z_k inside the model: not split into tiles here
        if denoiser is not model.denoiser:
            raise ValueError("tiling supports models with proxy_sharing 'once' only")
        out = model(physics)
        return Enhanced(out.x.float(), out.proxy_maps[0].float())
    if model.guidance_mode == "estimated":  # the control: the classical estimate stands for the proxy
        level_map = estimated_level_map(physics.init()).float()
    else:
        level_map = even_sized(proxy, physics.init()).float()
    if getattr(model, "proxy_output", "map") == "scalar":
        level_map = level_map.mean(dim=(2, 3), keepdim=True).expand_as(level_map)
    rhos = model.penalties(level_map.flatten(1).mean(1), level_map)
    out = hqs(physics, denoiser, rhos, model.map_guidance(level_map))
    return Enhanced(out.x.float(), level_map)


def psf_image(kernel: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """The kernel ``(kh, kw)`` as an image ``(H, W)`` with its centre ``(kh // 2, kw // 2)`` at
    ``(H // 2, W // 2)``: the same OTF as the kernel itself (:func:`psf2otf` of either), so a
    model can take the blur as one more image channel."""
    kh, kw = kernel.shape
    h, w = shape
    if kh > h or kw > w:
        raise ValueError(f"kernel of size {kh}x{kw} is larger than the image ({h}x{w})")
    out = kernel.new_zeros(h, w)
    r, c = h // 2 - kh // 2, w // 2 - kw // 2
    out[r:r + kh, c:c + kw] = kernel
    return out


class PackagedDeblur(nn.Module):
    """The model as MLflow's PyTorch flavour serves it (it passes one array to ``forward``).

    ``forward(inp (B, C + 1, H, W)) -> (B, C, H, W)``: channels ``0..C-1`` the observation,
    channel ``C`` the blur as :func:`psf_image` (centred, summing to 1). The computation of
    :func:`pipeline.enhance.deblur`, untiled.
    """

    def __init__(self, model: UnfoldedHQS):
        super().__init__()
        self.model = model
        self.channels = model.proxy.channels

    def forward(self, inp: torch.Tensor) -> torch.Tensor:
        y, psf = inp[:, :self.channels], inp[:, self.channels]
        return unfolded(self.model, self.model.denoiser, self.model.proxy, BlurPhysics(y, psf)).x
