import pytest
import torch

from dspnet_d2 import DN_SETS, build_supernet


def randomize_bn_stats(model: torch.nn.Module, seed: int = 0) -> None:
    """Non-trivial running statistics, so equality tests also cover BN buffers."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=gen) * 2 - 1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)


@pytest.fixture(scope="session")
def supernets():
    """One supernet per family (with random BN statistics), shared by the parametrized tests."""
    torch.manual_seed(0)
    nets = {"mbv3": build_supernet(DN_SETS["mbv3_s11"]), "resnet": build_supernet(DN_SETS["resnet_s9"])}
    with torch.no_grad():
        for net in nets.values():
            randomize_bn_stats(net)
    return nets
