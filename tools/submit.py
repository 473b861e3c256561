#!/usr/bin/env python
"""Submit one of the package's commands to Slurm (through submitit), requeued at the time limit and on preemption until
it is done; each requeued job runs the same command, which resumes from its checkpoints.

The command is ``python -m pretrain.engine.submit`` (it also runs from an installed package); --help says more.
"""
import sys

from dspnet_d2.errors import cli_main
from pretrain.engine.submit import main

if __name__ == "__main__":
    sys.exit(cli_main(main))
