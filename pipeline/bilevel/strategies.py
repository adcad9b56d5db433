"""Bilevel strategies: how one batch updates the denoiser ``omega`` and the proxy ``theta``.

The problem (docs/method.md §3), optimistic bilevel:
``min_omega min_theta f(x_K(omega, theta))  s.t.  theta in argmin_theta g(theta; omega)``,
``f = ||x_K - x||^2`` (reconstruction), ``g = ||H_theta(y) - sigma||^2`` (guidance error
against the true noise map, known for synthetic data).

Every strategy has the same interface: ``step(batch) -> {"loss": f, "guidance_loss": g}``, with
``batch`` holding ``physics`` (the bound forward model), ``x`` (ground truth) and ``target`` (the
guidance truth; None for real pairs: ``alternating`` and ``joint`` then take the outer step alone,
so the proxy learns from ``f`` only, and the step reports no ``guidance_loss``).
A non-finite loss skips the update and is reported as such (the trainer decides what to do).

- ``joint``: one step on ``f + w g`` (the paper's naive baseline);
- ``alternating``: one first-order step of each level (the reference code);
- ``unrolled``: ``T`` differentiated SGD steps on ``theta``, the exact hypergradient through them;
- ``implicit``: ``T`` Adam steps on ``theta``, then the implicit-function hypergradient.
In the last two ``theta`` is the inner problem's variable alone (the proxies: what ``g`` depends
on) and follows ``g`` only; everything else (denoiser, per-stage gains, rho head) is ``omega``.
With the proxy on the observation (``proxy_sharing: once``) ``g`` does not depend on ``omega``,
so both hypergradients reduce to ``grad_omega f``; with stage proxies they do not.
The math is in :mod:`pipeline.bilevel.hypergradients`.
"""
from __future__ import annotations

import math
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from pipeline.bilevel import hypergradients as hg
from pipeline.bilevel.parallel import average_, mean_value
from pipeline.models.unfolded import UnfoldedHQS

GRAD_CLIP = 1.0  # early stages invert near-singular blurs: rare huge gradients, clip them


def reconstruction_loss(model: UnfoldedHQS, batch: dict) -> torch.Tensor:
    out = model(batch["physics"], target=batch.get("target"))
    return F.mse_loss(out.x.to(batch["x"].dtype), batch["x"])


def guidance_loss(model: UnfoldedHQS, batch: dict) -> torch.Tensor:
    """The inner loss: the proxy's map on ``y`` against the true guidance map ``target (B, 1, H, W)``;
    with stage proxies, the mean over that and every stage's map (which needs the forward pass)."""
    target = batch["target"]
    if model.proxy_sharing == "once" or model.guidance_mode != "learned":
        return F.mse_loss(model.estimate_guidance(batch["physics"].y).to(target.dtype), target)
    maps = model(batch["physics"], target=target).proxy_maps
    return torch.stack([F.mse_loss(m.to(target.dtype), target) for m in maps]).mean()


class _Apply(nn.Module):
    """Lets :func:`torch.func.functional_call` run any function of the model, not only forward."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, fn, *args):
        return fn(self.model, *args)


def functional_losses(model: UnfoldedHQS, batch: dict) -> tuple[hg.Loss, hg.Loss]:
    """``(f, g)`` as functions of a ``{name: tensor}`` dict of the model's parameters."""
    wrapper = _Apply(model)

    def call(fn):
        return lambda params: functional_call(wrapper, {f"model.{k}": v for k, v in params.items()}, (fn, batch))

    return call(reconstruction_loss), call(guidance_loss)


def _both_losses(model: UnfoldedHQS, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """``(f, g)`` from one forward pass when the guidance loss needs the stages anyway."""
    if model.proxy_sharing == "once" or model.guidance_mode != "learned":
        return reconstruction_loss(model, batch), guidance_loss(model, batch)
    out = model(batch["physics"], target=batch["target"])
    target = batch["target"]
    f = F.mse_loss(out.x.to(batch["x"].dtype), batch["x"])
    return f, torch.stack([F.mse_loss(m.to(target.dtype), target) for m in out.proxy_maps]).mean()


def functional_pair(model: UnfoldedHQS, batch: dict):
    """``params -> (f, g)`` from one forward pass (see :func:`functional_losses`)."""
    wrapper = _Apply(model)
    return lambda params: functional_call(wrapper, {f"model.{k}": v for k, v in params.items()}, (_both_losses, batch))


def split_parameters(model: UnfoldedHQS) -> tuple[dict[str, nn.Parameter], dict[str, nn.Parameter]]:
    """``(omega, theta)``: theta the inner problem's parameters (the proxies), omega the rest."""
    inner = {id(p) for p in model.inner_parameters()}
    named = [(k, p) for k, p in model.named_parameters() if p.requires_grad]
    return {k: p for k, p in named if id(p) not in inner}, {k: p for k, p in named if id(p) in inner}


class Strategy(Protocol):
    optimizers: list[torch.optim.Optimizer]

    def step(self, batch: dict) -> dict[str, float]: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


def apply_step(opt: torch.optim.Optimizer, loss: torch.Tensor, scaler: torch.amp.GradScaler | None = None) -> None:
    """One clipped step of ``opt`` on ``loss``; skipped when the loss is not finite (the trainer
    counts those and stops after ``train.max_nonfinite`` in a row). With a ``scaler`` (float16
    training) the loss is scaled before the backward pass and the gradients unscaled before
    clipping; the scaler skips the step itself when a scaled gradient overflowed."""
    if not math.isfinite(mean_value(loss.item())):  # every worker skips alike
        return
    opt.zero_grad(set_to_none=True)
    (scaler.scale(loss) if scaler is not None else loss).backward()
    _finish_step(opt, scaler)


def _finish_step(opt: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None = None) -> None:
    params = [p for group in opt.param_groups for p in group["params"]]
    average_([p.grad for p in params if p.grad is not None])  # data-parallel workers
    if scaler is not None:
        scaler.unscale_(opt)  # clip the true gradients
    torch.nn.utils.clip_grad_norm_(params, GRAD_CLIP)
    if scaler is not None:
        scaler.step(opt)
        scaler.update()
    else:
        opt.step()


def apply_grads(opt: torch.optim.Optimizer, grads: dict[nn.Parameter, torch.Tensor], value: float) -> None:
    """One clipped step of ``opt`` along given gradients (a hypergradient); skipped when ``value``
    (the loss they belong to) or a gradient is not finite."""
    if not math.isfinite(value) or not all(torch.isfinite(g).all() for g in grads.values()):
        return
    opt.zero_grad(set_to_none=True)
    for p, g in grads.items():
        p.grad = g.detach().to(p.dtype)
    _finish_step(opt)


class Alternating:
    """The reference code's scheme: per batch, one first-order step of each level.

    Inner: ``theta <- theta - lr_inner * grad_theta (w * g)``; outer: all parameters (``omega``
    and, since the bilevel problem is optimistic, ``theta``) follow ``grad f``.
    """

    name = "alternating"
    scaler: torch.amp.GradScaler | None = None  # float16 training: set by the trainer

    def __init__(self, model: UnfoldedHQS, lr: float, lr_inner: float, weight: float):
        self.model, self.weight = model, weight
        self.inner = torch.optim.Adam(model.inner_parameters(), lr=lr_inner)
        self.outer = torch.optim.Adam(model.parameters(), lr=lr)
        self.optimizers = [self.inner, self.outer]

    def step(self, batch: dict) -> dict[str, float]:
        if batch.get("target") is None:  # real pairs: no inner problem, the outer step alone
            f = reconstruction_loss(self.model, batch)
            apply_step(self.outer, f, self.scaler)
            return {"loss": f.item()}
        g = guidance_loss(self.model, batch)
        if self.model.guidance_mode == "learned":
            apply_step(self.inner, self.weight * g, self.scaler)
        f = reconstruction_loss(self.model, batch)
        apply_step(self.outer, f, self.scaler)
        return {"loss": f.item(), "guidance_loss": g.item()}

    def state_dict(self) -> dict:
        return {"inner": self.inner.state_dict(), "outer": self.outer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.inner.load_state_dict(state["inner"])
        self.outer.load_state_dict(state["outer"])


class Joint:
    """The naive baseline: one step on ``f + w * g`` over all parameters."""

    name = "joint"
    scaler: torch.amp.GradScaler | None = None  # float16 training: set by the trainer

    def __init__(self, model: UnfoldedHQS, lr: float, lr_inner: float, weight: float):
        self.model, self.weight = model, weight
        self.opt = torch.optim.Adam(model.parameters(), lr=lr)
        self.optimizers = [self.opt]

    def step(self, batch: dict) -> dict[str, float]:
        f = reconstruction_loss(self.model, batch)
        if batch.get("target") is None:  # real pairs: no guidance truth, the reconstruction alone
            apply_step(self.opt, f, self.scaler)
            return {"loss": f.item()}
        g = guidance_loss(self.model, batch)
        apply_step(self.opt, f + self.weight * g, self.scaler)
        return {"loss": f.item(), "guidance_loss": g.item()}

    def state_dict(self) -> dict:
        return {"opt": self.opt.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.opt.load_state_dict(state["opt"])


class Unrolled:
    """``T`` inner SGD steps ``theta <- theta - inner_lr * grad_theta g``, kept, and one Adam step
    on ``omega`` along the exact gradient of ``f(omega, theta_T(omega))`` through them."""

    name = "unrolled"

    def __init__(self, model: UnfoldedHQS, lr: float, lr_inner: float, weight: float, inner_steps: int = 1,
                 inner_lr: float = 0.1, **_: object):
        self.model, self.steps, self.inner_lr = model, inner_steps, inner_lr
        self.omega, self.theta = split_parameters(model)
        self.outer = torch.optim.Adam(self.omega.values(), lr=lr)
        self.optimizers = [self.outer]

    def hypergradient(self, batch: dict) -> hg.Hypergradient:
        f, g = functional_losses(self.model, batch)
        if self.model.guidance_mode != "learned":  # no inner problem: plain gradient of f
            return hg.unrolled(f, g, self.omega, {}, 0, 0.0)
        return hg.unrolled(f, g, self.omega, self.theta, self.steps, self.inner_lr)

    def step(self, batch: dict) -> dict[str, float]:
        res = self.hypergradient(batch)
        if math.isfinite(res.f) and all(torch.isfinite(t).all() for t in res.inner.values()):
            with torch.no_grad():
                for k, t in res.inner.items():
                    self.theta[k].copy_(t)
        apply_grads(self.outer, {self.omega[k]: v for k, v in res.outer.items()}, mean_value(res.f))
        return {"loss": res.f, "guidance_loss": res.g}

    def state_dict(self) -> dict:
        return {"outer": self.outer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.outer.load_state_dict(state["outer"])


class Implicit:
    """``T`` Adam steps on ``theta`` with ``w * g`` (as ``alternating``), then one Adam step on
    ``omega`` along the implicit-function hypergradient at the current ``theta``."""

    name = "implicit"

    def __init__(self, model: UnfoldedHQS, lr: float, lr_inner: float, weight: float, inner_steps: int = 1,
                 implicit_method: str = "neumann", implicit_iterations: int = 3, implicit_alpha: float = 0.1,
                 implicit_damping: float = 1e-3, **_: object):
        self.model, self.weight, self.steps = model, weight, inner_steps
        self.method, self.iterations = implicit_method, implicit_iterations
        self.alpha, self.damping = implicit_alpha, implicit_damping
        self.omega, self.theta = split_parameters(model)
        self.inner = torch.optim.Adam(self.theta.values(), lr=lr_inner)
        self.outer = torch.optim.Adam(self.omega.values(), lr=lr)
        self.optimizers = [self.inner, self.outer]

    def hypergradient(self, batch: dict) -> hg.Hypergradient:
        f, g = functional_losses(self.model, batch)
        theta = self.theta if self.model.guidance_mode == "learned" else {}
        return hg.implicit(f, g, self.omega, theta, self.method, self.iterations, self.alpha, self.damping,
                           fg=functional_pair(self.model, batch))

    def step(self, batch: dict) -> dict[str, float]:
        if self.model.guidance_mode == "learned":
            for _ in range(self.steps):
                apply_step(self.inner, self.weight * guidance_loss(self.model, batch))
        res = self.hypergradient(batch)
        apply_grads(self.outer, {self.omega[k]: v for k, v in res.outer.items()}, mean_value(res.f))
        return {"loss": res.f, "guidance_loss": res.g}

    def state_dict(self) -> dict:
        return {"inner": self.inner.state_dict(), "outer": self.outer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.inner.load_state_dict(state["inner"])
        self.outer.load_state_dict(state["outer"])


STRATEGIES: dict[str, type] = {"alternating": Alternating, "joint": Joint, "unrolled": Unrolled, "implicit": Implicit}


def set_lr_scale(strategy: Strategy, scale: float) -> None:
    """Scale every learning rate of ``strategy`` relative to its initial value (schedules)."""
    for opt in strategy.optimizers:
        for group in opt.param_groups:
            group.setdefault("initial_lr", group["lr"])
            group["lr"] = group["initial_lr"] * scale


def make_strategy(name: str, model: UnfoldedHQS, lr: float, lr_inner: float, weight: float,
                  **options: object) -> Strategy:
    """The strategy ``name``; ``options`` (``inner_steps``, ``inner_lr``, ``implicit_*``) go to
    the strategies that use them and are ignored by the others."""
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; known: {sorted(STRATEGIES)}")
    if name in ("alternating", "joint"):
        return STRATEGIES[name](model, lr, lr_inner, weight)
    return STRATEGIES[name](model, lr, lr_inner, weight, **options)


def strategy_options(cfg) -> dict:
    """The strategy options of a ``TrainConfig``."""
    return {k: getattr(cfg, k) for k in ("inner_steps", "inner_lr", "implicit_method", "implicit_iterations",
                                         "implicit_alpha", "implicit_damping")}
