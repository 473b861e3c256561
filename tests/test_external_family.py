"""A family defined here, outside the package, registered with ``register_family`` and nothing else: its DNs
parse and form sets, a DN slices out of its supernet as a plain network equal to the slimmed supernet, exports to
ONNX, and converts to a detectron2 .pkl that loads into the backbone built for that DN."""
import pickle

import pytest
import torch
from conftest import randomize_bn_stats
from torch import nn

from dspnet_d2 import (DN_SETS, Family, Supernet, build_supernet, dn_set, get_family, parse_dn, register_family,
                       slice_dn, unregister_family)
from dspnet_d2.dn import DNSpec
from dspnet_d2.slim.ops import SlimBatchNorm2d, SlimConv2d, SlimLinear
from dspnet_d2.weights import save_dn_file

BASE_CHANNELS = (8, 16, 32, 64)  # res2..res5 at width 1.0
RESOLUTION = 64  # strides up to 32: res5 is 2 x 2


def tiny_channels(dn: DNSpec) -> dict[str, int]:
    res = [int(c * dn.width) for c in BASE_CHANNELS]
    return {"res2": res[0], "res3": res[1], "res4": res[2], "res5": res[3], "pooled": res[3], "stem": res[0]}


def _layers(conv, norm, channels: list[int]) -> dict[str, nn.Module]:
    """Every layer of the network (the same names in the supernet and the static network): a stride-2 stem and four
    stride-2 stages of conv-BN-ReLU."""
    layers = {"conv1": conv(3, channels[0], 3, 2, 1), "bn1": norm(channels[0]), "relu": nn.ReLU(inplace=True)}
    for i, (cin, cout) in enumerate(zip(channels[:1] + channels[:-1], channels)):
        layers[f"layer{i + 1}"] = nn.Sequential(conv(cin, cout, 3, 2, 1), norm(cout), nn.ReLU(inplace=True))
    return layers


class TinyNet(nn.Module):
    """The static network of a tiny DN, plain torch layers only."""

    def __init__(self, channels: list[int], num_classes: int | None):
        super().__init__()
        for name, layer in _layers(lambda *a: nn.Conv2d(*a, bias=False), nn.BatchNorm2d, channels).items():
            self.add_module(name, layer)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Identity() if num_classes is None else nn.Linear(channels[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class SlimTiny(Supernet):
    family = "tiny"

    def __init__(self, max_dn: DNSpec, num_classes: int | None = None):
        super().__init__(max_dn, num_classes)
        channels = [tiny_channels(max_dn)[f"res{i}"] for i in range(2, 6)]
        for name, layer in _layers(SlimConv2d, SlimBatchNorm2d, channels).items():
            self.add_module(name, layer)
        if num_classes is not None:
            self.fc = SlimLinear(channels[-1], num_classes)
        self.set_active(max_dn)

    def channels(self, dn: DNSpec) -> dict[str, int]:
        return tiny_channels(dn)

    def _apply_dn(self, dn: DNSpec) -> None:
        channels = tiny_channels(dn)
        self.conv1.active_out = channels["stem"]
        for i in range(1, 5):
            getattr(self, f"layer{i}")[0].active_out = channels[f"res{i + 1}"]

    def _stages(self):
        yield lambda x: self.layer1(self.relu(self.bn1(self.conv1(x))))
        yield from (self.layer2, self.layer3, self.layer4)

    def _classify(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


def _build_static(dn: DNSpec, num_classes=None, norm_layer=None) -> nn.Module:
    model = TinyNet([tiny_channels(dn)[f"res{i}"] for i in range(2, 6)], num_classes)
    if norm_layer is not None:  # detectron2's norm layers, with the names and keys of BatchNorm2d
        for name, module in list(model.named_modules()):
            if isinstance(module, nn.BatchNorm2d):
                parent, _, child = name.rpartition(".")
                setattr(model.get_submodule(parent), child, norm_layer(module.num_features))
    return model


TINY = Family(name="tiny", widths=(0.5, 1.0), sets={"tiny_s2": ("tiny_w0.5", "tiny_w1.0")}, default_set="tiny_s2",
              resolution=RESOLUTION, eval_resolution=RESOLUTION, supernet=SlimTiny, build_static=_build_static,
              channels=tiny_channels, stem=("conv1", "bn1", "relu"),
              stages=lambda dn: tuple((f"layer{i}",) for i in range(1, 5)), head="fc", norm_eps=1e-5,
              norm_momentum=0.1)


@pytest.fixture
def tiny():
    register_family(TINY)
    yield TINY
    unregister_family("tiny")


def _supernet(num_classes: int | None = 10) -> SlimTiny:
    torch.manual_seed(0)
    supernet = build_supernet(dn_set("tiny"), num_classes=num_classes)
    with torch.no_grad():
        randomize_bn_stats(supernet)
    return supernet.eval()


def _images(batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, RESOLUTION, RESOLUTION, generator=torch.Generator().manual_seed(1))


def test_its_dns_parse_and_form_sets(tiny):
    half = parse_dn("tiny_w0.5")
    assert half == DNSpec("tiny", 0.5) and str(half) == "tiny_w0.5" and half.info is tiny is get_family("tiny")
    assert dn_set("tiny") == DN_SETS["tiny_s2"] == (half, parse_dn("tiny_w1.0"))
    assert dn_set("tiny_w1.0,tiny_w0.5") == (parse_dn("tiny_w1.0"), half)
    with pytest.raises(ValueError, match="not on the tiny grid.*tiny_w0.5, tiny_w1.0"):
        parse_dn("tiny_w0.75")
    with pytest.raises(ValueError, match="one family"):
        dn_set("tiny_w0.5,mbv3_w0.5")


def test_unregistered_it_is_gone(tiny):
    unregister_family("tiny")
    try:
        assert "tiny" not in DN_SETS and "tiny_s2" not in DN_SETS
        with pytest.raises(ValueError, match="unknown DN family 'tiny'"):
            parse_dn("tiny_w0.5")
    finally:
        register_family(TINY)  # for the fixture to remove


@pytest.mark.parametrize("width", [0.5, 1.0])
def test_a_sliced_dn_equals_the_slimmed_supernet(tiny, width):
    supernet = _supernet()
    dn = supernet.set_active(DNSpec("tiny", width))
    sliced = slice_dn(supernet, dn).eval()
    with torch.no_grad():
        assert torch.equal(sliced(_images()), supernet(_images()))
        features = supernet.forward_features(_images())
    assert {name: f.shape[1] for name, f in features.items()} == supernet.feature_channels(dn)
    assert all(type(m).__module__.startswith("torch.") for m in list(sliced.modules())[1:])


def test_a_sliced_dn_exports_to_onnx(tiny, tmp_path):
    for module in ("onnx", "onnxscript", "onnxruntime"):
        pytest.importorskip(module, reason="the deploy extra: pip install -e '.[deploy]'")
    from dspnet_d2.deploy.formats import export_onnx, parity_error, run_onnx

    model = slice_dn(_supernet(), parse_dn("tiny_w0.5")).eval()
    path = export_onnx(model, str(tmp_path / "tiny_w0.5.onnx"), RESOLUTION, dynamic_batch=True)
    for images in (_images(1), _images(3)):
        with torch.no_grad():
            expected = model(images)
        assert parity_error(run_onnx(path, images), expected) < 1e-4  # relative to the output's scale


def test_a_dn_converts_to_a_detectron2_pkl_that_loads_into_its_backbone(tiny, tmp_path, capsys):
    from dspnet_d2.deploy.commands import convert_to_d2_pkl
    from dspnet_d2.deploy.convert import D2_PREFIX

    dn = parse_dn("tiny_w0.5")
    model = slice_dn(_supernet(), dn)
    save_dn_file(str(tmp_path / "tiny_w0.5.pth"), dn, model.state_dict())
    assert convert_to_d2_pkl(str(tmp_path / "tiny_w0.5.pth"), str(tmp_path / "tiny.pkl")) == 0
    assert "of DN tiny_w0.5" in capsys.readouterr().out
    converted = pickle.load(open(tmp_path / "tiny.pkl", "rb"))["model"]
    backbone = {k: v for k, v in model.state_dict().items() if not k.startswith("fc.")}  # no classifier
    assert set(converted) == {D2_PREFIX + k for k in backbone}
    assert all(torch.equal(torch.from_numpy(converted[D2_PREFIX + k]), v) for k, v in backbone.items())

    pytest.importorskip("detectron2")
    from detectron2.config import get_cfg
    from detectron2.modeling import build_backbone

    from dspnet_d2 import add_dspnet_config
    from dspnet_d2.d2.checkpoint import DSPNetCheckpointer

    cfg = get_cfg()
    add_dspnet_config(cfg)
    cfg.merge_from_list(["MODEL.BACKBONE.NAME", "build_dspnet_fpn_backbone", "MODEL.DSPNET.DN", "tiny_w0.5",
                         "MODEL.DSPNET.NORM", "BN", "MODEL.FPN.IN_FEATURES", ["res2", "res3", "res4", "res5"],
                         "MODEL.DEVICE", "cpu"])
    detector = nn.Module()
    detector.backbone = build_backbone(cfg)
    assert detector.backbone.bottom_up.dn == dn
    checkpointer = DSPNetCheckpointer(detector)
    incompatible = checkpointer._load_model(checkpointer._load_file(str(tmp_path / "tiny.pkl")))
    assert [k for k in incompatible.missing_keys if k.startswith("backbone.bottom_up")] == []
    assert incompatible.unexpected_keys == [] and incompatible.incorrect_shapes == []
    bottom_up = detector.backbone.bottom_up.eval()
    with torch.no_grad():
        outputs = bottom_up(_images())
        pooled = nn.Sequential(*list(model.eval().children())[:-1])(_images())  # the DN's network, no classifier
    assert torch.allclose(outputs["res5"].mean((2, 3)), pooled.flatten(1), atol=1e-6)
    assert {name: o.shape[1] for name, o in outputs.items()} == {k: v for k, v in tiny_channels(dn).items()
                                                                  if k.startswith("res")}
