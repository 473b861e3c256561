import pytest
import torch

from dspnet_d2 import DN_SETS, parse_dn
from pretrain.method import DSPNet, byol_loss, sample_subnets


@pytest.fixture(scope="module")
def method():
    torch.manual_seed(0)
    return DSPNet("mbv3_s5", num_subnets=4, proj_hidden=64, proj_dim=16)


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
        assert len(picked) == n == len(set(picked))
        assert picked[0] == dns[0] and picked[-1] == dns[-1]  # smallest first, largest last
        assert all(dn in dns for dn in picked)
        assert picked == sample_subnets(dns, n, step, seed=7, full_only=False)  # same on every rank
        seen.update(picked)
    assert seen == set(dns)  # every DN gets trained


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
    method.online.encoder.set_active("mbv3_w0.5")
    x = torch.randn(4, 3, 32, 32)
    p1, p2 = method.online(x, x)
    assert p1.shape == p2.shape == (4, 16)
    method.online.encoder.set_active("mbv3_w1.0")


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
    method.online.encoder.set_active("mbv3_w0.5")
    method.target.encoder.set_active("mbv3_w0.5")  # even if someone slimmed it
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
