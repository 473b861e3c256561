"""Datasets for tests/test_workers.py, importable by a ``spawn`` or ``forkserver`` worker."""
import os
import subprocess
import time

import torch


def blocked_signals(pid="self") -> dict[str, int]:
    """Each thread's blocked-signal mask (``SigBlk`` of /proc) of a process: ``{thread name/id: mask}``."""
    found = {}
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/status") as f:
                lines = f.read().splitlines()
        except OSError:
            continue
        name = next(line.split(":", 1)[1].strip() for line in lines if line.startswith("Name"))
        found[f"{name}/{task}"] = next(int(line.split()[1], 16) for line in lines if line.startswith("SigBlk"))
    return found


class WorkerFacts(torch.utils.data.Dataset):
    """Item i: this worker's pid, every thread's blocked mask, and the mask a program it starts has."""

    def __len__(self):
        return 4

    def __getitem__(self, i):
        child = subprocess.run(["grep", "SigBlk", "/proc/self/status"], capture_output=True, text=True).stdout
        return {"pid": os.getpid(), "threads": blocked_signals(), "child_mask": int(child.split()[1], 16)}


class Slow(torch.utils.data.Dataset):
    """Items that take ``seconds`` each (a worker busy decoding: PyTorch's parent watch does not run meanwhile);
    a worker names itself in ``folder`` (a file named by its pid) when it starts one."""

    def __init__(self, seconds: float, folder: str):
        self.seconds, self.folder = seconds, folder

    def __len__(self):
        return 1000

    def __getitem__(self, i):
        open(os.path.join(self.folder, str(os.getpid())), "w").close()
        time.sleep(self.seconds)
        return os.getpid()
