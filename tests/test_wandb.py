"""LOGGER.WANDB: every metric record mirrored to a W&B run (offline here), resumed runs continue it, and a
missing package is one error line."""
import json
import sys
import types

import pytest
from pretrain_utils import tiny_cfg, tiny_data

from dspnet_d2.errors import cli_main
from pretrain.engine.trainer import Trainer

ONE_EPOCH = ["LOGGER.WANDB", "True", "LOGGER.WANDB_OFFLINE", "True", "SOLVER.EPOCHS", "1", "EXPORT", "False"]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return tiny_data(tmp_path_factory.mktemp("demo"))


class FakeRun:
    def __init__(self, **kwargs):
        self.kwargs, self.logged, self.metrics, self.finished = kwargs, [], [], False

    def define_metric(self, name, step_metric=None):
        self.metrics.append((name, step_metric))

    def log(self, values):
        self.logged.append(values)

    def finish(self):
        self.finished = True


def _records(folder):
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def test_every_metric_record_is_mirrored_and_a_resumed_run_continues_the_same_wandb_run(data_root, tmp_path,
                                                                                         monkeypatch):
    runs = []
    fake = types.ModuleType("wandb")
    fake.init = lambda **kwargs: runs.append(FakeRun(**kwargs)) or runs[-1]
    monkeypatch.setitem(sys.modules, "wandb", fake)
    cfg = tiny_cfg(data_root, tmp_path, *ONE_EPOCH)
    Trainer(cfg).train()
    run = runs[0]
    run_id = (tmp_path / "wandb_run_id").read_text().strip()
    assert {k: run.kwargs[k] for k in ("id", "resume", "mode", "project", "name", "dir")} == {
        "id": run_id, "resume": "allow", "mode": "offline", "project": "dspnet", "name": "demo", "dir": str(tmp_path)}
    assert run.kwargs["config"]["SOLVER"]["EPOCHS"] == 1 and ("*", "step") in run.metrics
    numbers = [{k: v for k, v in r.items() if isinstance(v, (int, float))} for r in _records(tmp_path)]
    assert run.logged == numbers and len(numbers) == 4 and run.finished  # what TensorBoard gets, step included
    Trainer(cfg).train()  # the same command again (nothing left to train): the same W&B run
    assert runs[1].kwargs["id"] == run_id and runs[1].finished


def test_an_offline_wandb_run_holds_the_metrics(data_root, tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_CONSOLE", "off")
    Trainer(tiny_cfg(data_root, tmp_path / "run", *ONE_EPOCH)).train()
    (history,) = (tmp_path / "run" / "wandb").glob("offline-run-*/run-*.wandb")
    data = history.read_bytes()  # W&B's record log: each value's key and JSON text are stored as they are
    last = _records(tmp_path / "run")[-1]
    for key in ("loss", "loss/mbv3_w1.0", "lr"):
        assert key.encode() in data and json.dumps(last[key]).encode() in data, key


def test_without_wandb_the_command_says_how_to_install_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb fails
    from pretrain.__main__ import main

    code = cli_main(lambda: main(["--config-file", "configs/pretrain/demo.yaml", "LOGGER.WANDB", "True",
                                  "OUTPUT_DIR", str(tmp_path)]))
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: LOGGER.WANDB is True but wandb cannot be imported")
    assert "pip install 'dspnet[wandb]'" in err and len(err.splitlines()) == 1
