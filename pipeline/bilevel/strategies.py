"""Bilevel strategies: how one batch updates the denoiser ``omega`` and the proxy ``theta``.

The problem (METHOD.md §3), optimistic bilevel:
``min_omega min_theta f(x_K(omega, theta))  s.t.  theta in argmin_theta g(theta; omega)``,
``f = ||x_K - x||^2`` (reconstruction), ``g = ||H_theta(y) - sigma||^2`` (guidance error
against the true noise map, known for synthetic data).

Every strategy has the same interface: ``step(batch) -> {"loss": f, "guidance_loss": g}``, with
``batch`` holding ``physics`` (the bound forward model), ``x`` (ground truth) and ``sigma``.
A non-finite loss skips the update and is reported as such (the trainer decides what to do).
"""
from __future__ import annotations

import math
from typing import Protocol

import torch
import torch.nn.functional as F

from pipeline.models.unfolded import UnfoldedHQS

GRAD_CLIP = 1.0  # early stages invert near-singular blurs: rare huge gradients, clip them


def reconstruction_loss(model: UnfoldedHQS, batch: dict) -> torch.Tensor:
    out = model(batch["physics"], sigma_map=batch["sigma"])
    return F.mse_loss(out.x.to(batch["x"].dtype), batch["x"])


def guidance_loss(model: UnfoldedHQS, batch: dict) -> torch.Tensor:
    return F.mse_loss(model.estimate_noise(batch["physics"].y).to(batch["sigma"].dtype), batch["sigma"])


class Strategy(Protocol):
    optimizers: list[torch.optim.Optimizer]

    def step(self, batch: dict) -> dict[str, float]: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


def apply_step(opt: torch.optim.Optimizer, loss: torch.Tensor) -> None:
    """One clipped step of ``opt`` on ``loss``; skipped when the loss is not finite (the trainer
    counts those and stops after ``train.max_nonfinite`` in a row)."""
    if not math.isfinite(loss.item()):
        return
    opt.zero_grad(set_to_none=True)
    loss.backward()
    params = [p for group in opt.param_groups for p in group["params"]]
    torch.nn.utils.clip_grad_norm_(params, GRAD_CLIP)
    opt.step()


class Alternating:
    """The reference code's scheme: per batch, one first-order step of each level.

    Inner: ``theta <- theta - lr_inner * grad_theta (w * g)``; outer: all parameters (``omega``
    and, since the bilevel problem is optimistic, ``theta``) follow ``grad f``.
    """

    name = "alternating"

    def __init__(self, model: UnfoldedHQS, lr: float, lr_inner: float, weight: float):
        self.model, self.weight = model, weight
        self.inner = torch.optim.Adam(model.proxy.parameters(), lr=lr_inner)
        self.outer = torch.optim.Adam(model.parameters(), lr=lr)
        self.optimizers = [self.inner, self.outer]

    def step(self, batch: dict) -> dict[str, float]:
        g = guidance_loss(self.model, batch)
        if self.model.guidance_mode == "learned":
            apply_step(self.inner, self.weight * g)
        f = reconstruction_loss(self.model, batch)
        apply_step(self.outer, f)
        return {"loss": f.item(), "guidance_loss": g.item()}

    def state_dict(self) -> dict:
        return {"inner": self.inner.state_dict(), "outer": self.outer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.inner.load_state_dict(state["inner"])
        self.outer.load_state_dict(state["outer"])


class Joint:
    """The naive baseline: one step on ``f + w * g`` over all parameters."""

    name = "joint"

    def __init__(self, model: UnfoldedHQS, lr: float, lr_inner: float, weight: float):
        self.model, self.weight = model, weight
        self.opt = torch.optim.Adam(model.parameters(), lr=lr)
        self.optimizers = [self.opt]

    def step(self, batch: dict) -> dict[str, float]:
        f = reconstruction_loss(self.model, batch)
        g = guidance_loss(self.model, batch)
        apply_step(self.opt, f + self.weight * g)
        return {"loss": f.item(), "guidance_loss": g.item()}

    def state_dict(self) -> dict:
        return {"opt": self.opt.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.opt.load_state_dict(state["opt"])


STRATEGIES: dict[str, type] = {"alternating": Alternating, "joint": Joint}


def set_lr_scale(strategy: Strategy, scale: float) -> None:
    """Scale every learning rate of ``strategy`` relative to its initial value (schedules)."""
    for opt in strategy.optimizers:
        for group in opt.param_groups:
            group.setdefault("initial_lr", group["lr"])
            group["lr"] = group["initial_lr"] * scale


def make_strategy(name: str, model: UnfoldedHQS, lr: float, lr_inner: float, weight: float) -> Strategy:
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; known: {sorted(STRATEGIES)}")
    return STRATEGIES[name](model, lr, lr_inner, weight)
