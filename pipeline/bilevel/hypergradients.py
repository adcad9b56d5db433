"""Hypergradients of the bilevel problem (docs/method.md §4), model-agnostic.

The problem: ``min_omega F(omega) = f(omega, theta*(omega))`` with
``theta*(omega) in argmin_theta g(omega, theta)``. Parameters travel as ``{name: tensor}`` dicts,
the losses as callables ``f(params) -> scalar`` and ``g(params) -> scalar`` over the union of the
two dicts (a model's losses under :func:`torch.func.functional_call`), so the same code serves the
unfolded model and the synthetic problems of the tests.

- :func:`unrolled`: ``theta_T`` after ``T`` plain gradient steps on ``g`` from ``theta_0``,
  differentiated through (reverse mode): the exact gradient of ``f(omega, theta_T(omega))``.
- :func:`implicit`: the implicit-function theorem at the current ``theta`` (taken as
  ``theta*``): ``dF/domega = f_omega - g_{omega theta} v`` with ``g_{theta theta} v = f_theta``,
  ``v`` by a truncated Neumann series or conjugate gradients, from Hessian-vector products only.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

Params = dict[str, torch.Tensor]
Loss = Callable[[Params], torch.Tensor]


@dataclass
class Hypergradient:
    """``outer``: ``dF/domega`` per outer name; ``inner``: the inner parameters the estimate was
    taken at (``theta_T`` for unrolled, detached), ``f`` and ``g`` the losses' values there."""

    outer: Params
    inner: Params
    f: float
    g: float


def _grads(out: torch.Tensor, params: Params, **kw) -> list[torch.Tensor]:
    """``d out / d params``, zeros for the parameters ``out`` does not depend on."""
    values = list(params.values())
    grads = torch.autograd.grad(out, values, allow_unused=True, **kw)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(values, grads)]


def _dot(a: list[torch.Tensor], b: list[torch.Tensor]) -> torch.Tensor:
    return sum((x * y).sum() for x, y in zip(a, b))


def unrolled(f: Loss, g: Loss, omega: Params, theta: Params, steps: int, lr: float) -> Hypergradient:
    """The exact gradient of ``f(omega, theta_T(omega))``, ``theta_{t+1} = theta_t - lr * g_theta``.

    ``omega`` and ``theta`` are leaf tensors (the model's parameters); the inner steps build new
    tensors, so nothing is modified in place. Memory grows with ``steps`` (the graph of every
    inner step is kept for the reverse pass).
    """
    current = dict(theta)
    g_value = float("nan")
    for _ in range(steps):
        g_t = g({**omega, **current})
        g_value = float(g_t.detach())
        grads = _grads(g_t, current, create_graph=True)
        current = {k: v - lr * d for (k, v), d in zip(current.items(), grads)}
    f_value = f({**omega, **current})
    outer = dict(zip(omega, _grads(f_value, omega)))
    return Hypergradient(outer, {k: v.detach() for k, v in current.items()}, float(f_value.detach()), g_value)


def neumann(hvp: Callable[[list[torch.Tensor]], list[torch.Tensor]], b: list[torch.Tensor], iterations: int,
            alpha: float) -> list[torch.Tensor]:
    """``H^-1 b ~ alpha * sum_{j=0}^{J} (I - alpha H)^j b`` (``J = iterations``); converges when
    ``0 < alpha < 2 / lambda_max(H)`` and ``H`` is positive definite."""
    term = [t.clone() for t in b]
    total = [t.clone() for t in b]
    for _ in range(iterations):
        h = hvp(term)
        term = [t - alpha * x for t, x in zip(term, h)]
        total = [s + t for s, t in zip(total, term)]
    return [alpha * s for s in total]


def conjugate_gradient(hvp: Callable[[list[torch.Tensor]], list[torch.Tensor]], b: list[torch.Tensor],
                       iterations: int, tol: float = 1e-12) -> list[torch.Tensor]:
    """``H^-1 b`` by conjugate gradients from ``x = 0`` (``H`` symmetric positive definite);
    exact after ``dim`` iterations in exact arithmetic."""
    x = [torch.zeros_like(t) for t in b]
    r = [t.clone() for t in b]
    p = [t.clone() for t in b]
    rr = _dot(r, r)
    for _ in range(iterations):
        if float(rr) <= tol * tol:
            break
        hp = hvp(p)
        step = rr / _dot(p, hp)
        x = [xi + step * pi for xi, pi in zip(x, p)]
        r = [ri - step * hi for ri, hi in zip(r, hp)]
        rr_new = _dot(r, r)
        p = [ri + (rr_new / rr) * pi for ri, pi in zip(r, p)]
        rr = rr_new
    return x


def implicit(f: Loss, g: Loss, omega: Params, theta: Params, method: str = "cg", iterations: int = 10,
             alpha: float = 0.1, damping: float = 0.0,
             fg: Callable[[Params], tuple[torch.Tensor, torch.Tensor]] | None = None) -> Hypergradient:
    """``dF/domega = f_omega - g_{omega theta} v``, ``(g_{theta theta} + damping I) v = f_theta``.

    Exact when ``theta`` is a strict local minimiser of ``g`` and the solve converged; the
    ``damping`` regularises a singular inner Hessian (over-parameterised proxies have one).
    ``fg``, when given, computes both losses from one forward pass (stage proxies: ``g`` needs
    the unrolled stages as ``f`` does).
    """
    params = {**omega, **theta}
    f_value, g_value = fg(params) if fg is not None else (f(params), g(params))
    f_all = _grads(f_value, params, retain_graph=True)  # one reverse pass for both blocks
    f_outer, f_inner = f_all[:len(omega)], f_all[len(omega):]
    g_inner = _grads(g_value, theta, create_graph=True)
    thetas = list(theta.values())

    def hvp(v: list[torch.Tensor]) -> list[torch.Tensor]:
        out = torch.autograd.grad(g_inner, thetas, grad_outputs=v, retain_graph=True, allow_unused=True)
        return [(torch.zeros_like(t) if o is None else o) + damping * t for o, t in zip(out, v)]

    if method == "neumann":
        v = neumann(hvp, f_inner, iterations, alpha)
    elif method == "cg":
        v = conjugate_gradient(hvp, f_inner, iterations)
    else:
        raise ValueError(f"unknown implicit method {method!r}; known: neumann, cg")
    # g_{omega theta} v: the gradient of <g_theta, v> w.r.t. omega (v held constant)
    if any(t.requires_grad for t in g_inner):
        mixed = _grads(_dot(g_inner, [t.detach() for t in v]), omega)
    else:  # g does not depend on theta through a graph (nothing to correct)
        mixed = [torch.zeros_like(p) for p in omega.values()]
    outer = {k: a - m for k, a, m in zip(omega, f_outer, mixed)}
    return Hypergradient(outer, {k: t.detach() for k, t in theta.items()}, float(f_value.detach()),
                         float(g_value.detach()))
