import pytest
import torch
from torch import nn
from torchvision.models import MobileNetV3, ResNet, mobilenet_v3_large, resnet18, resnet34

from conftest import randomize_bn_stats
from dspnet_d2 import DN_SETS, FAMILIES, build_static_dn, build_supernet, dn_set, parse_dn, recalibrate_bn, slice_dn
from dspnet_d2.slim import FEATURE_STRIDES

MBV3_DNS = [f"mbv3_w{w!r}" for w in FAMILIES["mbv3"].widths]  # 5-, 3- and 11-switch sets together
RESNET_DNS = [str(dn) for dn in DN_SETS["resnet"]] + ["resnet_w1.25_d1231"]
ALL_DNS = MBV3_DNS + RESNET_DNS
SIZE = 64  # small inputs keep the suite fast; strides are still 4..32


def _input(batch=2, seed=1):
    return torch.randn(batch, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


def _slimmed(supernets, dn):
    net = supernets[dn.family]
    net.set_active(dn)
    return net


@pytest.mark.parametrize("dn", ALL_DNS)
def test_forward_shapes_and_declared_channels(supernets, dn):
    net = _slimmed(supernets, parse_dn(dn)).eval()
    x = _input()
    with torch.no_grad():
        feats = net.forward_features(x)
        pooled = net(x)
    assert list(feats) == ["res2", "res3", "res4", "res5"]
    for name, feat in feats.items():
        assert feat.shape == (2, net.feature_channels()[name], SIZE // FEATURE_STRIDES[name],
                              SIZE // FEATURE_STRIDES[name])
    assert pooled.shape == (2, net.feature_dim)
    assert torch.allclose(pooled, feats["res5"].mean((2, 3)), atol=1e-6)


@pytest.mark.parametrize("dn", ALL_DNS)
def test_slice_equals_slimmed_supernet(supernets, dn):
    dn = parse_dn(dn)
    net = _slimmed(supernets, dn).eval()
    exported = slice_dn(net, dn).eval()
    x = _input()
    with torch.no_grad():
        assert torch.equal(exported(x), net(x))
    assert isinstance(exported, (MobileNetV3, ResNet))  # torchvision's classes (or BasicResNet(ResNet))
    for module in list(exported.modules())[1:]:
        assert type(module).__module__.startswith(("torch.", "torchvision.")), type(module)


@pytest.mark.parametrize("dn", ALL_DNS)
def test_active_parameters_get_gradients_inactive_do_not(supernets, dn):
    dn = parse_dn(dn)
    net = _slimmed(supernets, dn).train()
    net.zero_grad(set_to_none=True)
    out = net(_input(batch=4))
    (out * torch.randn_like(out)).sum().backward()
    # the active slice of every tensor is the shape of the same key in the static network of the DN
    active = build_static_dn(dn).state_dict()
    for name, param in net.named_parameters():
        grad = torch.zeros_like(param) if param.grad is None else param.grad
        if name not in active:  # a block dropped by depth slimming
            assert torch.count_nonzero(grad) == 0, name
            continue
        region = tuple(slice(0, n) for n in active[name].shape)
        assert torch.count_nonzero(grad[region]) > 0, f"{name} got no gradient"
        mask = torch.ones_like(grad, dtype=torch.bool)
        mask[region] = False
        assert torch.count_nonzero(grad[mask]) == 0, f"{name}: inactive slice got a gradient"
    net.zero_grad(set_to_none=True)


def _torchvision_pairs():
    pairs = [(dn, lambda classes, w=parse_dn(dn).width: mobilenet_v3_large(width_mult=w, num_classes=classes))
             for dn in MBV3_DNS]
    pairs += [("resnet18", lambda classes: resnet18(num_classes=classes)),
              ("resnet34", lambda classes: resnet34(num_classes=classes))]
    return pairs


@pytest.mark.parametrize("dn,make_tv", _torchvision_pairs(), ids=[p[0] for p in _torchvision_pairs()])
def test_torchvision_strict_load_and_equal_outputs(dn, make_tv):
    """With a classifier the export loads strict=True into the torchvision model exactly as built."""
    torch.manual_seed(0)
    dn = parse_dn(dn)
    net = build_supernet(DN_SETS[dn.family], num_classes=10).eval()
    with torch.no_grad():
        randomize_bn_stats(net)
    net.set_active(dn)
    tv_model = make_tv(10).eval()
    tv_model.load_state_dict(slice_dn(net, dn).state_dict(), strict=True)
    x = _input()
    with torch.no_grad():
        assert torch.equal(tv_model(x), net(x))


@pytest.mark.parametrize("dn", ["mbv3_w0.75", "resnet18"])
def test_headless_export_loads_into_torchvision_features(supernets, dn):
    net = _slimmed(supernets, parse_dn(dn)).eval()
    tv_model = (mobilenet_v3_large(width_mult=0.75) if dn.startswith("mbv3") else resnet18()).eval()
    missing, unexpected = tv_model.load_state_dict(slice_dn(net, net.active).state_dict(), strict=False)
    assert unexpected == [] and all(k.startswith(("classifier", "fc")) for k in missing) and missing
    if dn.startswith("mbv3"):
        tv_model.classifier = nn.Identity()
    else:
        tv_model.fc = nn.Identity()
    with torch.no_grad():
        assert torch.equal(tv_model(_input()), net(_input()))


def test_sliced_weights_are_independent_copies(supernets):
    net = _slimmed(supernets, parse_dn("mbv3_w0.5"))
    exported = slice_dn(net, net.active)
    sup_ptrs = {t.untyped_storage().data_ptr() for t in net.state_dict().values()}
    for value in exported.state_dict().values():
        assert value.untyped_storage().data_ptr() not in sup_ptrs
        assert value.untyped_storage().nbytes() == value.numel() * value.element_size()
    weight = exported.features[0][0].weight
    before = net.features[0][0].weight[:weight.shape[0]].clone()
    with torch.no_grad():
        weight.add_(1.0)
    assert torch.equal(net.features[0][0].weight[:weight.shape[0]], before)


def test_set_active_rejects_larger_or_foreign_dns():
    small = build_supernet(dn_set("resnet18,resnet_w1.25_d2222"))
    assert small.max_dn == parse_dn("resnet_w1.25_d2222")
    with pytest.raises(ValueError, match="not a sub-network"):
        small.set_active(parse_dn("resnet34"))
    with pytest.raises(ValueError, match="not a sub-network"):
        small.set_active(parse_dn("mbv3_w0.5"))
    with pytest.raises(ValueError, match="not a sub-network"):
        slice_dn(small, parse_dn("resnet_w1.5_d2222"))
    with pytest.raises(ValueError, match="one family"):
        build_supernet(dn_set("resnet18") + dn_set("mbv3_w0.5"))


def test_active_dn_is_explicit_state(supernets):
    net = supernets["mbv3"]
    assert net.set_active(parse_dn("mbv3_w0.5")) == parse_dn("mbv3_w0.5")
    assert net.active == parse_dn("mbv3_w0.5") and net.feature_dim == 480
    net.eval()
    with torch.no_grad():
        net(_input())
    assert net.active == parse_dn("mbv3_w0.5")
    net.set_active(parse_dn("mbv3_w1.0"))
    assert net.feature_dim == 960
    assert net.feature_channels() == {"res2": 24, "res3": 40, "res4": 112, "res5": 960}


@pytest.mark.parametrize("dn", ["mbv3_w0.625", "resnet_w1.25_d2343"])
@pytest.mark.parametrize("on_supernet", [True, False], ids=["supernet", "exported"])
def test_recalibrate_bn_matches_data_statistics(supernets, dn, on_supernet):
    model = _slimmed(supernets, parse_dn(dn))
    model = model if on_supernet else slice_dn(model, model.active)
    first_conv = model.features[0][0] if dn.startswith("mbv3") else model.conv1
    first_bn = model.features[0][1] if dn.startswith("mbv3") else model.bn1
    gen = torch.Generator().manual_seed(3)
    batches = [torch.randn(4, 3, SIZE, SIZE, generator=gen) * 2 + 3 for _ in range(3)]
    seen = []
    hook = first_conv.register_forward_hook(lambda m, i, o: seen.append(o.detach()))
    model.eval()
    used = recalibrate_bn(model, ((b, 0) for b in batches + batches), num_batches=3)
    hook.remove()
    assert used == 3 and len(seen) == 3 and not model.training
    channels = seen[0].shape[1]
    expected_mean = torch.stack([o.mean((0, 2, 3)) for o in seen]).mean(0)
    expected_var = torch.stack([o.var((0, 2, 3), unbiased=True) for o in seen]).mean(0)
    assert torch.allclose(first_bn.running_mean[:channels], expected_mean, atol=1e-4)
    assert torch.allclose(first_bn.running_var[:channels], expected_var, rtol=1e-4)
    assert first_bn.momentum == (0.01 if dn.startswith("mbv3") else 0.1)
    with torch.no_grad():
        randomize_bn_stats(model)  # leave the shared fixture as other tests expect it


def test_recalibrate_bn_needs_batches():
    with pytest.raises(ValueError, match="no batches"):
        recalibrate_bn(build_static_dn(parse_dn("resnet18")), [])
