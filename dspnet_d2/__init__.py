"""dspnet: slimmable pretrained networks (DSPNet) and their detectron2 backbones."""
import warnings

# fvcore (detectron2's dependency) scripts a function at import; torch's deprecation of torch.jit.script then
# reached every command's error output, beside its one-line error, with nothing a user can act on
warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)

# the families first: importing them registers the built-in ones, which every DN string is checked against
from .families import Family, build_static_dn, build_supernet, get_family  # noqa: E402
from .d2.config import add_dspnet_config  # noqa: E402
from .dn import DN_SETS, FAMILIES, DNSpec, dn_set, parse_dn, register_family, unregister_family  # noqa: E402
from .errors import ExistingFileError, InvalidInputError, MissingFileError, UserError  # noqa: E402
from .recalibration import recalibrate_bn  # noqa: E402
from .slim import SlimMobileNetV3, SlimResNet, Supernet  # noqa: E402
from .slim.slicing import slice_dn  # noqa: E402

__version__ = "0.1.0"
__all__ = ["add_dspnet_config", "DN_SETS", "FAMILIES", "DNSpec", "dn_set", "parse_dn", "slice_dn", "recalibrate_bn",
           "Family", "register_family", "unregister_family", "get_family", "build_static_dn", "build_supernet",
           "SlimMobileNetV3", "SlimResNet", "Supernet", "UserError", "InvalidInputError", "MissingFileError",
           "ExistingFileError"]

try:  # detectron2 is optional (not on PyPI); with it, importing dspnet_d2 registers the backbones
    import detectron2  # noqa: F401
except ImportError:
    pass
else:
    from .d2 import backbone  # noqa: F401
