#!/usr/bin/env python
"""Write one DN as a deployable file: ONNX, TorchScript, a torch.export program (.pt2) or a torchvision state_dict.

The command is ``python -m dspnet_d2.deploy.export_dn`` (it also runs from an installed package); --help says more.
"""
import sys

from dspnet_d2.deploy.export_dn import main
from dspnet_d2.errors import cli_main

if __name__ == "__main__":
    sys.exit(cli_main(main))
