"""Hypergradients against finite differences (float64, relative error < 1e-3), on a synthetic
bilevel problem and on the unfolded model with stage proxies (whose inner problem depends on
``omega``, so the cross term is exercised); and the strategies' steps and checkpoints."""
import dataclasses

import pytest
import torch

from pipeline.bilevel import hypergradients as hg
from pipeline.bilevel.strategies import functional_losses, make_strategy, split_parameters
from pipeline.config import ModelConfig
from pipeline.models.factory import build_model
from pipeline.physics.blur import BlurPhysics

REL = 1e-3
EPS = 1e-6


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: a second thread only adds synchronisation (and waits on a loaded machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def assert_close(fd: float, an: float, what) -> None:
    assert abs(fd - an) <= REL * max(abs(fd), 1e-8) + 1e-10, (what, fd, an)


# -- a synthetic problem: theta*(omega) by Newton's method ------------------------------------
def _synthetic():
    g0 = torch.Generator().manual_seed(3)
    m = torch.randn(5, 4, generator=g0, dtype=torch.float64)
    w = torch.randn(5, 3, generator=g0, dtype=torch.float64)
    c = torch.randn(4, generator=g0, dtype=torch.float64)

    def g(p):  # strictly convex in theta, coupled nonlinearly with omega
        th, om = p["theta"], p["omega"]
        return 0.5 * ((m @ th - torch.tanh(w @ om)) ** 2).sum() + 0.05 * (th**4).sum() + 0.1 * (th * om.sum()).sum()

    def f(p):
        th, om = p["theta"], p["omega"]
        return torch.sin(th * c).sum() + (th**2).sum() * om[0] + (om**2).sum()

    return f, g


def _newton(g, omega: dict, theta0: torch.Tensor, iters: int = 40) -> torch.Tensor:
    th = theta0.clone()
    for _ in range(iters):
        th = th.detach().requires_grad_()
        grad = torch.autograd.grad(g({**omega, "theta": th}), th, create_graph=True)[0]
        hess = torch.stack([torch.autograd.grad(grad[i], th, retain_graph=True)[0] for i in range(th.numel())])
        th = th - torch.linalg.solve(hess, grad)
    return th.detach()


@pytest.mark.parametrize("method,iterations,alpha", [("cg", 10, 0.0), ("neumann", 400, 0.1)])
def test_implicit_hypergradient_matches_finite_differences_synthetic(method, iterations, alpha):
    f, g = _synthetic()
    om = torch.tensor([0.3, -0.2, 0.5], dtype=torch.float64, requires_grad=True)
    theta_star = _newton(g, {"omega": om.detach()}, torch.zeros(4, dtype=torch.float64)).requires_grad_()
    if method == "neumann":  # alpha below 2 / lambda_max of the inner Hessian
        hess = torch.autograd.functional.hessian(lambda t: g({"omega": om.detach(), "theta": t}), theta_star.detach())
        alpha = 1.0 / float(torch.linalg.eigvalsh(hess).max())
    res = hg.implicit(f, g, {"omega": om}, {"theta": theta_star}, method, iterations, alpha)
    for i in range(3):
        vals = []
        for sign in (1, -1):
            o = om.detach().clone()
            o[i] += sign * EPS
            vals.append(float(f({"omega": o, "theta": _newton(g, {"omega": o}, theta_star.detach())})))
        assert_close((vals[0] - vals[1]) / (2 * EPS), float(res.outer["omega"][i]), (method, i))


def _sgd(g, omega: dict, theta: dict, steps: int, lr: float) -> dict:
    current = {k: v.detach().clone() for k, v in theta.items()}
    for _ in range(steps):
        cur = {k: v.requires_grad_() for k, v in current.items()}
        grads = torch.autograd.grad(g({**omega, **cur}), list(cur.values()), allow_unused=True)
        current = {k: (v - lr * d if d is not None else v).detach() for (k, v), d in zip(cur.items(), grads)}
    return current


def test_unrolled_hypergradient_matches_finite_differences_synthetic():
    f, g = _synthetic()
    om = torch.tensor([0.3, -0.2, 0.5], dtype=torch.float64, requires_grad=True)
    th = torch.tensor([0.1, 0.2, -0.3, 0.4], dtype=torch.float64, requires_grad=True)
    res = hg.unrolled(f, g, {"omega": om}, {"theta": th}, steps=3, lr=0.05)
    for i in range(3):
        vals = []
        for sign in (1, -1):
            o = om.detach().clone()
            o[i] += sign * EPS
            vals.append(float(f({"omega": o, **_sgd(g, {"omega": o}, {"theta": th}, 3, 0.05)})))
        assert_close((vals[0] - vals[1]) / (2 * EPS), float(res.outer["omega"][i]), i)


# -- the unfolded model, stage proxies ---------------------------------------------------------
CFG = ModelConfig(stages=2, denoiser_width=4, denoiser_dilations=(1, 2, 1), proxy_width=4, learn_rho=True,
                  proxy_sharing="per_stage")


def _tiny_batch():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 1, 13, 11, generator=g, dtype=torch.float64)
    k = torch.rand(3, 3, generator=g, dtype=torch.float64)
    k = k / k.sum()
    physics = BlurPhysics(BlurPhysics(x, k).A(x) + 0.02 * torch.randn(x.shape, generator=g, dtype=torch.float64), k)
    return {"physics": physics, "x": x, "target": torch.full((1, 1, 13, 11), 0.02, dtype=torch.float64)}


def _model(cfg=CFG):
    torch.manual_seed(0)
    model = build_model(cfg, 1).double()
    with torch.no_grad():  # off the zero initialisation, so every layer's gradient is exercised
        for proxy in [model.proxy, *getattr(model, "stage_proxies", [])]:
            torch.nn.init.normal_(proxy.body[-1].weight, std=0.1)
    return model


OMEGA_PROBES = [("denoiser.body.0.weight", 0), ("denoiser.body.0.weight", 20), ("denoiser.body.4.bias", 0),
                ("guidance_gain", 0), ("rho_gain", 1)]


def _fd(loss_of_omega, omega: dict, name: str, idx: int) -> float:
    p = omega[name]
    vals = []
    for sign in (1, -1):
        with torch.no_grad():
            old = p.view(-1)[idx].item()
            p.view(-1)[idx] = old + sign * EPS
        vals.append(loss_of_omega())
        with torch.no_grad():
            p.view(-1)[idx] = old
    return (vals[0] - vals[1]) / (2 * EPS)


def test_unrolled_hypergradient_matches_finite_differences_on_the_model():
    model, batch = _model(), _tiny_batch()
    omega, theta = split_parameters(model)
    assert set(theta) == {k for k in dict(model.named_parameters()) if k.startswith(("proxy.", "stage_proxies."))}
    f, g = functional_losses(model, batch)
    steps, lr = 2, 0.5
    res = hg.unrolled(f, g, omega, theta, steps, lr)
    # the inner problem depends on omega here (stage 2's proxy sees z_2): a non-trivial check
    assert float(res.outer["denoiser.body.0.weight"].abs().sum()) > 0

    def loss():
        return float(f({**omega, **_sgd(g, omega, theta, steps, lr)}).detach())

    for name, idx in OMEGA_PROBES:
        assert_close(_fd(loss, omega, name, idx), float(res.outer[name].reshape(-1)[idx]), (name, idx))


@pytest.mark.parametrize("method", ["cg", "neumann"])
def test_implicit_hypergradient_matches_finite_differences_on_the_model(method):
    """theta restricted to the proxies' output biases (one level offset per proxy), whose inner
    optimum Newton's method finds to machine precision; the rest of the proxies is held fixed."""
    model, batch = _model(), _tiny_batch()
    omega, _ = split_parameters(model)
    names = ["proxy.body.6.bias", "stage_proxies.0.body.6.bias"]
    omega = {k: v for k, v in omega.items()}
    f, g = functional_losses(model, batch)
    params = dict(model.named_parameters())

    def g_vec(vec):
        return g({**omega, names[0]: vec[:1], names[1]: vec[1:]})

    def solve(start: torch.Tensor) -> torch.Tensor:
        vec = start.clone()
        for _ in range(30):
            v = vec.detach().requires_grad_()
            grad = torch.autograd.grad(g_vec(v), v, create_graph=True)[0]
            if float(grad.detach().abs().max()) < 1e-15:
                break
            hess = torch.stack([torch.autograd.grad(grad[i], v, retain_graph=True)[0] for i in range(2)])
            vec = (v - torch.linalg.solve(hess, grad)).detach()
        return vec

    star = solve(torch.cat([params[n].detach() for n in names]))
    hess = torch.autograd.functional.hessian(g_vec, star)
    assert bool((torch.linalg.eigvalsh(hess) > 0).all())  # a strict minimum: the IFT applies
    theta = {names[0]: star[:1].clone().requires_grad_(), names[1]: star[1:].clone().requires_grad_()}
    eig = torch.linalg.eigvalsh(hess)
    alpha = 2.0 / float(eig.min() + eig.max())  # the fastest Neumann contraction
    res = hg.implicit(f, g, omega, theta, method, 10 if method == "cg" else 150, alpha)
    assert float(res.outer["denoiser.body.0.weight"].abs().sum()) > 0

    def loss():
        s = solve(star)
        return float(f({**omega, names[0]: s[:1], names[1]: s[1:]}).detach())

    for name, idx in OMEGA_PROBES:
        assert_close(_fd(loss, omega, name, idx), float(res.outer[name].reshape(-1)[idx]), (name, idx))


def test_with_the_proxy_on_the_observation_both_hypergradients_reduce_to_grad_f():
    model, batch = _model(dataclasses.replace(CFG, proxy_sharing="once")), _tiny_batch()
    omega, theta = split_parameters(model)
    f, g = functional_losses(model, batch)
    plain = hg.unrolled(f, g, omega, {}, 0, 0.0).outer  # grad_omega f at theta
    imp = hg.implicit(f, g, omega, theta, "cg", 5).outer
    for k in omega:
        assert torch.allclose(imp[k], plain[k], rtol=1e-10, atol=1e-14), k


@pytest.mark.parametrize("strategy", ["unrolled", "implicit"])
@pytest.mark.parametrize("sharing", ["once", "per_stage"])
def test_hypergradient_strategies_reduce_the_losses_and_roundtrip_their_state(strategy, sharing):
    model, batch = _model(dataclasses.replace(CFG, proxy_sharing=sharing)), _tiny_batch()
    opts = {"inner_steps": 1, "inner_lr": 0.5, "implicit_method": "cg", "implicit_iterations": 3}
    step = make_strategy(strategy, model, lr=3e-3, lr_inner=3e-3, weight=100.0, **opts)
    first = step.step(batch)
    for _ in range(6):
        last = step.step(batch)
    assert last["loss"] < first["loss"]
    again = make_strategy(strategy, model, lr=3e-3, lr_inner=3e-3, weight=100.0, **opts)
    again.load_state_dict(step.state_dict())


def test_one_forward_for_both_losses_gives_the_same_implicit_hypergradient():
    from pipeline.bilevel.strategies import functional_pair

    model, batch = _model(), _tiny_batch()
    omega, theta = split_parameters(model)
    f, g = functional_losses(model, batch)
    two = hg.implicit(f, g, omega, theta, "neumann", 2, 0.1, 1e-3)
    one = hg.implicit(f, g, omega, theta, "neumann", 2, 0.1, 1e-3, fg=functional_pair(model, batch))
    for k in omega:
        assert torch.allclose(one.outer[k], two.outer[k], rtol=1e-10, atol=1e-14), k
