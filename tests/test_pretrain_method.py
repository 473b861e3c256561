import copy

import pytest
import torch

from dspnet_d2 import DN_SETS, parse_dn
from pretrain.methods import DSPNet, StepContext, byol_loss, collapse_stats, sample_subnets
from pretrain.monitor.probe import LinearProbes


@pytest.fixture(scope="module")
def method():
    torch.manual_seed(0)
    return DSPNet(DN_SETS["mbv3_s5"], num_subnets=4, proj_hidden=64, proj_dim=16)


def test_byol_loss_values():
    x = torch.randn(8, 16)
    assert byol_loss(x, x).abs().max() < 1e-6
    assert byol_loss(x, -x) == pytest.approx(4.0)
    assert byol_loss(x, 3 * x) == pytest.approx(0.0, abs=1e-6)  # scale-free: normalised MSE
    p, z = torch.randn(8, 16), torch.randn(8, 16)
    expected = ((p / p.norm(dim=1, keepdim=True) - z / z.norm(dim=1, keepdim=True)) ** 2).sum(1).mean()
    assert byol_loss(p, z) == pytest.approx(expected.item(), rel=1e-5)


def test_symmetric_loss_sums_both_directions():
    p1, p2, z1, z2 = (torch.randn(4, 8) for _ in range(4))
    total = DSPNet.symmetric_loss((p1, p2), (z1, z2))
    assert total == pytest.approx((byol_loss(p1, z2) + byol_loss(p2, z1)).item())
    assert total != pytest.approx((byol_loss(p1, z1) + byol_loss(p2, z2)).item())


@pytest.mark.parametrize("set_name,n", [("mbv3_s5", 4), ("resnet_s9", 4), ("mbv3_s11", 5), ("mbv3_s3", 3)])
def test_sandwich_sampling(set_name, n):
    dns = DN_SETS[set_name]
    seen = set()
    for step in range(200):
        picked = sample_subnets(dns, n, step, seed=7, full_only=False)
        assert len(picked) == n == len(set(picked))  # n <= |DNs|: all distinct
        assert picked[0] == dns[0] and picked[-1] == dns[-1]  # smallest first, largest last
        assert all(dn in dns for dn in picked)
        assert picked == sample_subnets(dns, n, step, seed=7, full_only=False)  # same on every rank
        seen.update(picked)
    assert seen == set(dns)  # every DN gets trained


@pytest.mark.parametrize("n,expected_middle", [(4, ["mbv3_w0.75"] * 2), (5, ["mbv3_w0.75"] * 3)])
def test_middle_draws_repeat_when_n_exceeds_the_dn_set(n, expected_middle):
    picked = sample_subnets(DN_SETS["mbv3_s3"], n, step=3, seed=0, full_only=False)
    assert [str(dn) for dn in picked] == ["mbv3_w0.5", *expected_middle, "mbv3_w1.0"]


def test_repeated_middle_draws_are_balanced():
    dns = DN_SETS["mbv3_s5"]  # 3 middle DNs, n - 2 = 4 draws: each once, one of them twice
    for step in range(20):
        middle = sample_subnets(dns, 6, step, seed=0, full_only=False)[1:-1]
        assert set(middle) == set(dns[1:-1]) and len(middle) == 4


def test_sampling_depends_on_step_and_seed():
    dns = DN_SETS["resnet_s9"]
    draws = {tuple(sample_subnets(dns, 4, step, 0, False)) for step in range(50)}
    assert len(draws) > 5
    assert [sample_subnets(dns, 4, s, 0, False) for s in range(20)] != [sample_subnets(dns, 4, s, 1, False)
                                                                          for s in range(20)]


def test_warmup_and_byol_train_the_full_network_only():
    dns = DN_SETS["mbv3_s5"]
    assert sample_subnets(dns, 4, 3, 0, full_only=True) == [parse_dn("mbv3_w1.0")]
    assert sample_subnets((parse_dn("resnet18"),), 1, 3, 0, full_only=False) == [parse_dn("resnet18")]


def test_target_is_full_network_copy_and_projector_is_slimmable(method):
    assert method.target.encoder.max_dn == parse_dn("mbv3_w1.0")
    assert not any(p.requires_grad for p in method.target.parameters())
    online = dict(method.online.named_parameters())
    for name, value in method.target.named_parameters():
        assert torch.equal(value, online[name])
    method.online.encoder.set_active(parse_dn("mbv3_w0.5"))
    x = torch.randn(4, 3, 32, 32)
    p1, p2 = method.online(x, x)
    assert p1.shape == p2.shape == (4, 16)
    method.online.encoder.set_active(parse_dn("mbv3_w1.0"))


def test_ema_update(method):
    target_before = {k: v.clone() for k, v in method.target.state_dict().items()}
    with torch.no_grad():
        for p in method.online.parameters():
            p.add_(torch.randn_like(p))
    method.update_target(0.9)
    online = dict(method.online.named_parameters())
    for name, value in method.target.named_parameters():
        assert torch.allclose(value, 0.9 * target_before[name] + 0.1 * online[name], atol=1e-6)


def test_target_projections_always_use_the_full_network(method):
    method.online.encoder.set_active(parse_dn("mbv3_w0.5"))
    method.target.encoder.set_active(parse_dn("mbv3_w0.5"))  # even if someone slimmed it
    x = torch.randn(4, 3, 32, 32)
    z1, z2 = method.target_projections(x, x)
    assert method.target.encoder.active == parse_dn("mbv3_w1.0")
    assert z1.shape == (4, 16) and not z1.requires_grad


def test_momentum_bn_in_target(method):
    method.train()
    method.set_target_bn_weight(0.0)  # pure running statistics: output independent of the batch
    x = torch.randn(4, 3, 32, 32)
    z_a = method.target_projections(x, x)[0]
    z_b = method.target_projections(torch.cat([x[:2], 5 * torch.randn(2, 3, 32, 32)]), x)[0]
    assert torch.allclose(z_a[:2], z_b[:2], atol=1e-5)
    method.set_target_bn_weight(1.0)  # batch statistics: the other images matter
    z_c = method.target_projections(torch.cat([x[:2], 5 * torch.randn(2, 3, 32, 32)]), x)[0]
    assert not torch.allclose(z_a[:2], z_c[:2], atol=1e-3)
    method.set_target_bn_weight(None)


def _momentum_bn_by_hand(x, running_mean, running_var, a, eps=1e-5):
    """Momentum^2 Teacher's MomentumBatchNorm2d, written out: normalise with a mix of batch and running."""
    mean = x.mean((0, 2, 3))
    var = x.var((0, 2, 3), unbiased=True)
    mixed_mean, mixed_var = a * mean + (1 - a) * running_mean, a * var + (1 - a) * running_var
    out = (x - mixed_mean[None, :, None, None]) / torch.sqrt(mixed_var[None, :, None, None] + eps)
    return out, mean, var


def test_momentum_bn_two_steps_by_hand():
    from dspnet_d2.slim.ops import SlimBatchNorm2d, commit_momentum_stats

    gen = torch.Generator().manual_seed(0)
    bn = SlimBatchNorm2d(3).train()
    views = [[torch.randn(4, 3, 5, 5, generator=gen) * s + s for s in (1.0, 2.0)] for _ in range(2)]
    running_mean, running_var = torch.zeros(3), torch.ones(3)
    for a, (v1, v2) in zip((1.0, 0.25), views):  # step 0: weight 1; step 1: weight 0.25
        bn.stat_weight = a
        out1, out2 = bn(v1), bn(v2)
        # both views see the same running statistics: nothing moves between them
        exp1, m1, s1 = _momentum_bn_by_hand(v1, running_mean, running_var, a)
        exp2, m2, s2 = _momentum_bn_by_hand(v2, running_mean, running_var, a)
        torch.testing.assert_close(out1, exp1, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(out2, exp2, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(bn.running_mean, running_mean)
        commit_momentum_stats(bn)  # once per step: a x (mean of both views' statistics) + (1 - a) x running
        running_mean = a * (m1 + m2) / 2 + (1 - a) * running_mean
        running_var = a * (s1 + s2) / 2 + (1 - a) * running_var
        torch.testing.assert_close(bn.running_mean, running_mean, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(bn.running_var, running_var, rtol=1e-6, atol=1e-6)
    assert not torch.allclose(running_mean, torch.zeros(3))


def test_target_running_statistics_move_once_per_step():
    torch.manual_seed(0)
    method = DSPNet(DN_SETS["mbv3_s3"], num_subnets=3, proj_hidden=32, proj_dim=16).train()
    first_bn = method.target.encoder.features[0][1]
    seen = []
    first_bn.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0].detach()))
    before = first_bn.running_mean.clone()
    method.set_target_bn_weight(0.5)
    method.target_projections(torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32))
    expected = 0.5 * torch.stack([x.mean((0, 2, 3)) for x in seen]).mean(0) + 0.5 * before
    torch.testing.assert_close(first_bn.running_mean, expected, rtol=1e-5, atol=1e-6)
    assert first_bn._pending is None
    method.set_target_bn_weight(None)


def test_momentum_bn_target_skips_cross_rank_statistics():
    norms = lambda module: [m for m in module.modules() if hasattr(m, "sync")]  # noqa: E731
    method = DSPNet(DN_SETS["mbv3_s3"], num_subnets=3, proj_hidden=32, proj_dim=16, momentum_bn=True)
    method.configure_norms(sync=True)
    assert all(m.sync for m in norms(method.online)) and not any(m.sync for m in norms(method.target))
    method = DSPNet(DN_SETS["mbv3_s3"], num_subnets=3, proj_hidden=32, proj_dim=16, momentum_bn=False)
    method.configure_norms(sync=True)
    assert all(m.sync for m in norms(method.target))


def _train_every_draw(method, subnets, view1, view2, projections):
    """Forward and backward of every draw, a repeated DN as many times as it was drawn: the reference."""
    rows = []
    for dn in subnets:
        method.online.encoder.set_active(dn)
        predictions, (rep1, rep2, proj1, _) = method.online(view1, view2, with_features=True)
        loss = method.symmetric_loss(predictions, projections)
        loss.backward()
        rows.append(torch.cat([loss.detach().float().view(1), collapse_stats(rep1, rep2, proj1)]))
    return torch.stack(rows)


@pytest.fixture(scope="module")
def repeated_draw():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # float64 grouped convolutions run one small kernel per group: threads only contend
    try:
        return _step_with_a_repeated_draw()
    finally:
        torch.set_num_threads(threads)


def _step_with_a_repeated_draw():
    """One step of mbv3_s3 with n = 4 ([w0.5, w0.75, w0.75, w1.0]) through ``Method.train_step``, the linear
    probe observing, beside the reference on an identical copy and a copy that forwards each DN once.

    In float64: both ways add the same gradients in a different order, which float32 rounding would blur
    (about 1e-5 relative on some entries) beyond a tolerance that still tells a missing or doubled term."""
    torch.manual_seed(0)
    method = DSPNet(DN_SETS["mbv3_s3"], num_subnets=4, proj_hidden=32, proj_dim=16).train().double()
    gen = torch.Generator().manual_seed(1)
    view1, view2 = (torch.randn(4, 3, 32, 32, generator=gen, dtype=torch.float64) for _ in range(2))
    labels = torch.tensor([0, 1, 2, 0])
    reference, once = copy.deepcopy(method), copy.deepcopy(method)
    probes = LinearProbes({str(dn): method.online.encoder.channels(dn)["pooled"] for dn in method.dns}, 3, lr=0.1)
    forwards, observed = [], []
    method.online.register_forward_hook(lambda module, inputs, output: forwards.append(module.encoder.active))

    def observe(dn, rep1, rep2):
        observed.append(dn)
        probes.observe(dn, torch.cat([rep1, rep2]), torch.cat([labels, labels]))

    ctx = StepContext(step=0, epoch=0, total_steps=10, network=method.online, observe=observe)
    rows, subnets = method.train_step((view1, view2), ctx)
    assert [str(dn) for dn in subnets] == ["mbv3_w0.5", "mbv3_w0.75", "mbv3_w0.75", "mbv3_w1.0"]
    projections = reference.target_projections(view1, view2)  # the same as the step's: the same target, batch
    expected_rows = _train_every_draw(reference, subnets, view1, view2, projections)
    with torch.no_grad():
        for dn in dict.fromkeys(subnets):
            once.online.encoder.set_active(dn)
            once.online(view1, view2)
    return dict(method=method, reference=reference, once=once, subnets=subnets, rows=rows,
                expected_rows=expected_rows, forwards=forwards, observed=observed, probes=probes)


def test_a_repeated_draw_gets_the_gradients_of_every_draw(repeated_draw):
    reference = dict(repeated_draw["reference"].online.named_parameters())
    for name, param in repeated_draw["method"].online.named_parameters():
        assert param.grad is not None, name
        torch.testing.assert_close(param.grad, reference[name].grad, rtol=1e-9, atol=1e-12, msg=name)


def test_a_repeated_draw_runs_once_and_moves_the_bn_statistics_once(repeated_draw):
    subnets = repeated_draw["subnets"]
    assert repeated_draw["forwards"] == [subnets[0], subnets[1], subnets[3]]  # 3 forwards for 4 draws
    buffers = dict(repeated_draw["method"].online.named_buffers())
    once, every = repeated_draw["once"].online.named_buffers(), dict(repeated_draw["reference"].online.named_buffers())
    for name, value in once:
        torch.testing.assert_close(buffers[name], value, rtol=1e-12, atol=1e-12, msg=name)
        if name.endswith("num_batches_tracked"):  # two views per distinct DN, against two per draw
            assert buffers[name].item() == 6 and every[name].item() == 8, name


def test_the_probe_observes_each_distinct_dn_once(repeated_draw):
    subnets, probes = repeated_draw["subnets"], repeated_draw["probes"]
    assert repeated_draw["observed"] == list(dict.fromkeys(subnets))
    assert probes.pending[:, 1].tolist() == [8.0, 8.0, 8.0]  # each head: one batch of both views


def test_rows_keep_one_row_per_draw_and_the_summed_loss(repeated_draw):
    rows, expected = repeated_draw["rows"], repeated_draw["expected_rows"]
    assert rows.shape == (4, 1 + 3)
    assert torch.equal(rows[1], rows[2])
    torch.testing.assert_close(rows, expected, rtol=1e-5, atol=1e-6)
    assert rows[:, 0].sum().item() == pytest.approx(expected[:, 0].sum().item(), rel=1e-6)
