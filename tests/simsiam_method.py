"""A method from outside the package: SimSiam (Chen & He, 2021) on the slimmable encoder. No target network:
each view's prediction is drawn to the other view's projection under a stop-gradient, by negative cosine.

Imported by tests/test_external_method.py, and by ``python -m pretrain --import tests/simsiam_method.py``.
"""
import torch.nn.functional as F

from dspnet_d2.families import build_supernet
from pretrain.methods import MLP, Method, TwoViewNetwork, register_method


def negative_cosine(prediction, projection):
    return -F.cosine_similarity(prediction, projection.detach(), dim=-1).mean()  # the stop-gradient


@register_method
class SimSiam(Method):
    name = "simsiam_test"

    def __init__(self, dns, proj_hidden, proj_dim, predictor_hidden, seed=0):
        super().__init__(dns, seed)
        encoder = build_supernet(dns)
        self.network = TwoViewNetwork(encoder, MLP(encoder.feature_dim, proj_hidden, proj_dim),
                                      MLP(proj_dim, predictor_hidden, proj_dim))

    @property
    def trained(self):
        return self.network

    @classmethod
    def add_config(cls, cfg):
        cfg.MODEL.setdefault("PROJ_HIDDEN", 2048)  # projector hidden width (BYOL's key, when BYOL is registered)
        cfg.MODEL.setdefault("PROJ_DIM", 2048)  # projection / prediction width
        cfg.MODEL.setdefault("SIMSIAM_PREDICTOR_HIDDEN", 512)  # SimSiam's bottleneck predictor width

    @classmethod
    def from_config(cls, cfg, dns):
        return cls(dns, cfg.MODEL.PROJ_HIDDEN, cfg.MODEL.PROJ_DIM, cfg.MODEL.SIMSIAM_PREDICTOR_HIDDEN, cfg.SEED)

    def subnet_loss(self, views, shared, ctx):
        (p1, p2), (y1, y2, z1, z2) = ctx.network(*views, with_features=True)
        return (negative_cosine(p1, z2) + negative_cosine(p2, z1)) / 2, (y1, y2, z1)
