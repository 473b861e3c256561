import math

import pytest
import torch
from torch import nn

from pretrain.engine.optim import LARS, lars_param_groups, lr_at
from pretrain.methods.byol import bn_stat_weight_at, tau_at


def test_tau_schedule_values():
    assert tau_at(0, 100, 0.996) == pytest.approx(0.996)
    assert tau_at(50, 100, 0.996) == pytest.approx(0.998)
    assert tau_at(100, 100, 0.996) == pytest.approx(1.0)
    k, total = 30, 100
    assert tau_at(k, total, 0.99) == pytest.approx(1 - 0.01 * (math.cos(math.pi * k / total) + 1) / 2)
    values = [tau_at(s, 100, 0.996) for s in range(101)]
    assert values == sorted(values)


def test_lr_schedule_warmup_then_cosine():
    peak = 0.2 * 4096 / 256
    assert lr_at(0, 1000, 100, peak) == pytest.approx(peak / 100)
    assert lr_at(99, 1000, 100, peak) == pytest.approx(peak)
    assert lr_at(100, 1000, 100, peak) == pytest.approx(peak)
    assert lr_at(550, 1000, 100, peak) == pytest.approx(peak / 2)
    assert lr_at(1000, 1000, 100, peak) == pytest.approx(0.0, abs=1e-12)


def test_momentum_bn_weight_decays_one_to_zero():
    assert bn_stat_weight_at(0, 10) == 1.0
    assert bn_stat_weight_at(5, 10) == pytest.approx(0.5)
    assert bn_stat_weight_at(10, 10) == pytest.approx(0.0, abs=1e-12)


def test_param_groups_exclude_biases_and_norms():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 2))
    weights, excluded = lars_param_groups([model], 1e-3)
    assert {id(p) for p in weights["params"]} == {id(model[0].weight), id(model[3].weight)}
    assert len(excluded["params"]) == 4 and excluded["weight_decay"] == 0 and excluded["lars_exclude"]
    assert weights["weight_decay"] == 1e-3 and not weights["lars_exclude"]


def test_lars_update_matches_formula():
    torch.manual_seed(0)
    weight = nn.Parameter(torch.randn(5, 3))
    bias = nn.Parameter(torch.randn(5))
    weight.grad, bias.grad = torch.randn(5, 3), torch.randn(5)
    w0, b0, gw, gb = weight.detach().clone(), bias.detach().clone(), weight.grad.clone(), bias.grad.clone()
    lr, wd, eta = 0.5, 0.1, 0.001
    opt = LARS([{"params": [weight], "weight_decay": wd, "lars_exclude": False},
                {"params": [bias], "weight_decay": 0.0, "lars_exclude": True}], lr=lr, weight_decay=wd, eta=eta)
    opt.step()
    decayed = gw + wd * w0  # weight decay before the trust ratio
    trust = eta * w0.norm() / decayed.norm()
    assert torch.allclose(weight, w0 - lr * trust * decayed, atol=1e-7)
    assert torch.allclose(bias, b0 - lr * gb, atol=1e-7)  # no decay, no adaptation
    # second step: momentum accumulates
    weight.grad, bias.grad = gw.clone(), gb.clone()
    opt.step()
    assert torch.allclose(bias, b0 - lr * gb - lr * (0.9 * gb + gb), atol=1e-6)


def test_lars_zero_norms_fall_back_to_unit_trust():
    weight = nn.Parameter(torch.zeros(3, 3))
    weight.grad = torch.ones(3, 3)
    LARS([weight], lr=1.0, weight_decay=0.0).step()
    assert torch.allclose(weight, -torch.ones(3, 3))


def test_lars_step_never_synchronises_with_host(monkeypatch):
    weight = nn.Parameter(torch.randn(4, 4))
    weight.grad = torch.randn(4, 4)
    opt = LARS(lars_param_groups([nn.Linear(4, 4)], 1e-4) + [{"params": [weight], "lars_exclude": False}], lr=0.1)
    for p in opt.param_groups[0]["params"] + opt.param_groups[1]["params"]:
        p.grad = torch.randn_like(p)

    def forbidden(*args, **kwargs):
        raise AssertionError("host synchronisation inside LARS.step")

    for name in ("item", "tolist", "__bool__", "__float__"):
        monkeypatch.setattr(torch.Tensor, name, forbidden)
    opt.step()


def test_lars_rejects_bad_hyper_parameters():
    with pytest.raises(ValueError):
        LARS([nn.Parameter(torch.zeros(1))], lr=-1.0)


def _lars_by_hand(params, grads, bufs, lr, wd, eta, momentum, exclude):
    """BYOL's LARS one parameter at a time: the reference the multi-tensor step must equal."""
    for p, g, buf in zip(params, grads, bufs):
        if not exclude:
            g = g + wd * p
            w_norm, g_norm = p.norm(), g.norm()
            g = g * (eta * w_norm / g_norm if w_norm > 0 and g_norm > 0 else 1.0)
        buf.mul_(momentum).add_(g)
        p.sub_(lr * buf)


def test_multi_tensor_lars_equals_the_per_parameter_update_over_steps():
    torch.manual_seed(1)
    shapes = [(8, 4, 3, 3), (16, 1, 3, 3), (32, 16), (5,)]
    params = [nn.Parameter(torch.randn(s)) for s in shapes]
    with torch.no_grad():
        params[1].zero_()  # a zero weight: trust ratio 1
    reference = [p.detach().clone() for p in params]
    bufs = [torch.zeros_like(p) for p in params]
    opt = LARS([{"params": params[:3], "weight_decay": 0.01, "lars_exclude": False},
                {"params": params[3:], "weight_decay": 0.0, "lars_exclude": True}], lr=0.3, weight_decay=0.01)
    for step in range(3):
        grads = [torch.randn(s) for s in shapes]
        grads[2] = torch.zeros(shapes[2]) if step == 1 else grads[2]  # a zero gradient: trust ratio 1
        for p, g in zip(params, grads):
            p.grad = g.clone()
        opt.step()
        _lars_by_hand(reference[:3], grads[:3], bufs[:3], 0.3, 0.01, 0.001, 0.9, exclude=False)
        _lars_by_hand(reference[3:], grads[3:], bufs[3:], 0.3, 0.0, 0.001, 0.9, exclude=True)
        for p, r in zip(params, reference):
            torch.testing.assert_close(p.detach(), r, atol=1e-6, rtol=1e-6)
