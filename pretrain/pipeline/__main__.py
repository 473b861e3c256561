"""``python -m pretrain.pipeline --config-file configs/pipeline/demo.yaml [KEY VALUE ...]``"""
import sys

from dspnet_d2.errors import cli_main

from . import main

sys.exit(cli_main(main))
