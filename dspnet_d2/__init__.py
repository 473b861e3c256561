"""dspnet: slimmable pretrained networks (DSPNet) and their detectron2 backbones."""
from .config import add_dspnet_config
from .dn import DN_SETS, FAMILIES, DNSpec, dn_set, parse_dn
from .errors import ExistingFileError, InvalidInputError, MissingFileError, UserError
from .export import export_dn, recalibrate_bn
from .models import build_static_dn
from .slim import SlimMobileNetV3, SlimResNet, Supernet, build_supernet

__version__ = "0.1.0"
__all__ = ["add_dspnet_config", "DN_SETS", "FAMILIES", "DNSpec", "dn_set", "parse_dn", "export_dn", "recalibrate_bn",
           "build_static_dn", "SlimMobileNetV3", "SlimResNet", "Supernet", "build_supernet", "UserError",
           "InvalidInputError", "MissingFileError", "ExistingFileError"]

try:  # detectron2 is optional (not on PyPI); with it, importing dspnet_d2 registers the backbones
    import detectron2  # noqa: F401
except ImportError:
    pass
else:
    from . import backbone  # noqa: F401
