"""dspnet: slimmable pretrained networks (DSPNet) and their detectron2 backbones."""
from .d2.config import add_dspnet_config
from .deploy.export import export_dn
from .dn import DN_SETS, FAMILIES, DNSpec, dn_set, parse_dn
from .errors import ExistingFileError, InvalidInputError, MissingFileError, UserError
from .families import FAMILY_DESCRIPTORS, Family, build_static_dn, build_supernet, get_family
from .recalibration import recalibrate_bn
from .slim import SlimMobileNetV3, SlimResNet, Supernet

__version__ = "0.1.0"
__all__ = ["add_dspnet_config", "DN_SETS", "FAMILIES", "DNSpec", "dn_set", "parse_dn", "export_dn", "recalibrate_bn",
           "FAMILY_DESCRIPTORS", "Family", "get_family", "build_static_dn", "build_supernet", "SlimMobileNetV3",
           "SlimResNet", "Supernet", "UserError", "InvalidInputError", "MissingFileError", "ExistingFileError"]

try:  # detectron2 is optional (not on PyPI); with it, importing dspnet_d2 registers the backbones
    import detectron2  # noqa: F401
except ImportError:
    pass
else:
    from .d2 import backbone  # noqa: F401
