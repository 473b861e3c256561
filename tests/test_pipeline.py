"""python -m pretrain.pipeline on a tiny configuration: every stage, skip-if-done, kill and rerun, no detectron2."""
import contextlib
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from dspnet_d2.demo.make_demo_data import make_demo_dataset
from dspnet_d2.deploy.convert import read_d2_pkl
from dspnet_d2.errors import cli_main
from dspnet_d2.weights import read_weights
from pretrain.engine.preemption import EXIT_PREEMPTED
from pretrain.pipeline import main as pipeline_main

ROOT = __file__.rsplit("/tests/", 1)[0]
DNS = ["mbv3_w0.5", "mbv3_w0.75", "mbv3_w1.0"]


def has_detectron2() -> bool:
    try:
        import cv2  # noqa: F401  (the pictures stage)
        import detectron2  # noqa: F401
    except ImportError:
        return False
    return True


def tiny_config(path, data, out, workers=0, launcher="") -> str:
    """Three DNs, 12 pretraining steps on 96 images, a checkpoint every step; 4 Mask R-CNN iterations."""
    cfg = {
        "OUTPUT_DIR": str(out),
        "PRETRAIN": {"LAUNCHER": launcher, "OPTS": ["MODEL.DNS", "mbv3_s3", "DATA.ROOT", str(data), "SOLVER.EPOCHS", 4, "SOLVER.BATCH_SIZE", 32,
                              "MODEL.FULL_ONLY_EPOCHS", 1, "SOLVER.WARMUP_EPOCHS", 1, "MONITOR.KNN_PERIOD", 0,
                              "MODEL.PROJ_HIDDEN", 64, "MODEL.PROJ_DIM", 32, "EXPORT_RECALIBRATION_BATCHES", 1,
                              "DATA.NUM_WORKERS", workers, "CHECKPOINT.PERIOD", 1, "CHECKPOINT.KEEP", 20, "LOG_PERIOD", 3]},
        "KNN": {"OPTS": ["DATA.ROOT", str(data), "RANDOM_INIT_SEEDS", 1, "BN_RECALIBRATION.BATCHES", 1, "KNN.K", 5]},
        "DETECTION": {"DEMO_ROOT": str(data),
                      "OPTS": ["SOLVER.MAX_ITER", 4, "SOLVER.STEPS", "(3,)", "SOLVER.WARMUP_ITERS", 1,
                               "SOLVER.CHECKPOINT_PERIOD", 2, "SOLVER.IMS_PER_BATCH", 2]},
        "PICTURES": {"NUM_IMAGES": 2},
    }
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def pipeline_env(tmp, block_detectron2: bool) -> dict:
    """The environment of a pipeline run; ``block_detectron2`` hides detectron2 from it and its children."""
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    if block_detectron2:
        fake = tmp / "no_detectron2" / "detectron2"
        fake.mkdir(parents=True, exist_ok=True)
        (fake / "__init__.py").write_text("raise ImportError('detectron2 is hidden by the test')\n")
        env["PYTHONPATH"] = os.pathsep.join([str(fake.parent), env.get("PYTHONPATH", "")])
    return env


def run_pipeline(config, env, *opts, timeout=600):
    return subprocess.run([sys.executable, "-m", "pretrain.pipeline", "--config-file", config, *opts], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def run_pipeline_here(config, tmp, block_detectron2: bool) -> tuple[int, str]:
    """The pipeline command in this process, as ``run_pipeline`` runs it in ``pipeline_env(tmp, block_detectron2)``
    (a torch import fewer): its stages are child processes in that environment, and the pipeline itself does
    not find detectron2 where it is hidden. Its exit status and output (its stages' output goes past it)."""
    env, output = pipeline_env(tmp, block_detectron2), io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(output):
        patch.chdir(ROOT)
        for key in ("OMP_NUM_THREADS", "PYTHONPATH"):
            if key in env:
                patch.setenv(key, env[key])
        if block_detectron2:
            patch.setitem(sys.modules, "detectron2", None)
        code = cli_main(lambda: pipeline_main(["--config-file", config]))
    return code, output.getvalue()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Tiny demo data, and one uninterrupted pipeline run without detectron2 (the reference)."""
    tmp = tmp_path_factory.mktemp("pipeline")
    data = make_demo_dataset(tmp / "data", train_per_class=12, val_per_class=6, coco_train_images=8, coco_val_images=4)
    config = tiny_config(tmp / "tiny.yaml", data, tmp / "reference")
    code, stdout = run_pipeline_here(config, tmp, block_detectron2=True)
    assert code == 0, stdout[-3000:]
    return {"tmp": tmp, "data": data, "config": config, "reference": tmp / "reference", "stdout": stdout}


def test_without_detectron2_runs_stages_1_to_3_and_says_what_it_skipped(tiny):
    out, stdout = tiny["reference"], tiny["stdout"]
    assert sorted(os.listdir(out / "pretrain" / "export")) == [f"{dn}.pth" for dn in DNS]
    assert (out / "pretrain" / "checkpoint_00000012.pth").exists()
    knn = json.loads((out / "knn" / "results.json").read_text())["results"]
    assert {(r["series"], r["dn"]) for r in knn} == {(s, dn) for s in ("DSPNet", "initial weights", "random init")
                                                      for dn in DNS}
    with open(out / "dspnet_supernet.pkl", "rb") as f:
        assert read_d2_pkl(f)["dspnet_supernet"] == "mbv3_w1.0"
    for number, stage in ((4, "detection"), (5, "ap_table"), (6, "pictures")):
        assert f"  {number}. {stage:<10} skipped: detectron2 is not installed" in stdout
    report = (out / "report.md").read_text()
    assert "| 1 | pretrain | ran |" in report and "| 4 | detection | skipped: detectron2 is not installed" in report
    assert "## 2. kNN top-1 of every DN" in report and "| DSPNet | mbv3_w0.75 |" in report
    assert "Not run: skipped: detectron2 is not installed" in report
    state = json.loads((out / "pipeline_state.json").read_text())
    assert [name for name, entry in state.items() if entry["done"]] == ["pretrain", "knn", "convert"]
    assert all(state[name]["seconds"] > 0 for name in ("pretrain", "knn", "convert"))


def _checkpoint_tensors(path):
    weights = read_weights(str(path)).weights
    return weights


def assert_same_stage_1_to_3(a, b):
    final = "checkpoint_00000012.pth"
    wa, wb = _checkpoint_tensors(a / "pretrain" / final), _checkpoint_tensors(b / "pretrain" / final)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    for dn in DNS:
        ea = torch.load(a / "pretrain" / "export" / f"{dn}.pth", weights_only=True)["state_dict"]
        eb = torch.load(b / "pretrain" / "export" / f"{dn}.pth", weights_only=True)["state_dict"]
        assert all(torch.equal(ea[k], eb[k]) for k in ea)

    def top1(out):
        return {(r["series"], r["dn"]): (r["top1"], r["top5"])
                for r in json.loads((out / "knn" / "results.json").read_text())["results"]}
    assert top1(a) == top1(b)
    with open(a / "dspnet_supernet.pkl", "rb") as fa, open(b / "dspnet_supernet.pkl", "rb") as fb:
        pa, pb = read_d2_pkl(fa)["model"], read_d2_pkl(fb)["model"]
    assert pa.keys() == pb.keys() and all(np.array_equal(pa[k], pb[k]) for k in pa)


@pytest.mark.slow
def test_killed_mid_pretraining_resumes_to_the_same_outputs_and_finishes(tiny):
    tmp, out = tiny["tmp"], tiny["tmp"] / "killed"
    config = tiny_config(tmp / "killed.yaml", tiny["data"], out)
    with_d2 = has_detectron2()
    env = pipeline_env(tmp, block_detectron2=not with_d2)
    proc = subprocess.Popen([sys.executable, "-m", "pretrain.pipeline", "--config-file", config], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while not (out / "pretrain" / "checkpoint_00000003.pth").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the pipeline and the pretraining under it, as a kill -9 would
    proc.wait()
    state = json.loads((out / "pipeline_state.json").read_text())
    assert state["pretrain"]["done"] is False and not (out / "pretrain" / "checkpoint_00000012.pth").exists()

    code, stdout = run_pipeline_here(config, tmp, block_detectron2=not with_d2)
    assert code == 0, stdout[-3000:]
    assert "resumed from" in (out / "pretrain" / "log.txt").read_text()
    assert "1. pretrain   ran (resumed after an interruption)" in stdout
    assert_same_stage_1_to_3(tiny["reference"], out)
    if with_d2:  # stages 4-7 complete on the resumed run
        runs = sorted(os.listdir(out / "detection"))
        assert runs == sorted(f"{init}_{dn}" for init in ("dspnet", "random") for dn in ("mbv3_w0.5", "mbv3_w1.0"))
        assert all((out / "detection" / r / "final_results.json").exists() for r in runs)
        table = (out / "ap" / "detection.md").read_text()
        assert table.count("| DSPNet | mbv3_w") == 2 and table.count("| random init | mbv3_w") == 2
        for dn in ("mbv3_w0.5", "mbv3_w1.0"):
            assert (out / "pictures" / f"{dn}.png").read_bytes()[:4] == b"\x89PNG"
        report = (out / "report.md").read_text()
        assert "![mbv3_w1.0](pictures/mbv3_w1.0.png)" in report and "| random init | mbv3_w0.5 |" in report

    code, again = run_pipeline_here(config, tmp, block_detectron2=not with_d2)  # everything done: nothing runs again
    assert code == 0, again[-3000:]
    for stage in ("pretrain", "knn", "convert") + (("detection", "ap_table", "pictures") if with_d2 else ()):
        assert f". {stage:<10} done before, skipped" in again
    assert "$ " not in again  # no command was run


def _start_until_checkpoint_3(config, env, out) -> subprocess.Popen:
    """The pipeline started in the background, once its pretraining has written the checkpoint of step 3."""
    proc = subprocess.Popen([sys.executable, "-m", "pretrain.pipeline", "--config-file", config], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not (out / "pretrain" / "checkpoint_00000003.pth").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    return proc


@pytest.mark.rehearsal
def test_sigterm_interrupts_the_running_stage_with_its_checkpoint_and_the_rerun_resumes(tiny):
    tmp, out = tiny["tmp"], tiny["tmp"] / "signalled"
    config = tiny_config(tmp / "signalled.yaml", tiny["data"], out, workers=2)  # the demo recipe's workers
    env = pipeline_env(tmp, block_detectron2=True)
    proc = _start_until_checkpoint_3(config, env, out)
    proc.send_signal(signal.SIGTERM)  # the pipeline alone: it passes the signal on to the pretraining
    stdout, _ = proc.communicate(timeout=300)
    assert proc.returncode == EXIT_PREEMPTED
    state = json.loads((out / "pipeline_state.json").read_text())
    assert state["pretrain"]["done"] is False and state["pretrain"]["interrupted"] == "SIGTERM"
    assert "1. pretrain   interrupted by SIGTERM (the stage exited with status 75)" in stdout
    assert "2. knn" in stdout and "knn" not in state  # nothing after the interrupted stage ran
    stopped = int(re.findall(r"stopped by SIGTERM after step (\d+)", (out / "pretrain" / "log.txt").read_text())[0])
    assert 3 <= stopped < 12 and (out / "pretrain" / f"checkpoint_{stopped:08d}.pth").exists()

    result = run_pipeline(config, env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "1. pretrain   ran (resumed after an interruption)" in result.stdout
    assert_same_stage_1_to_3(tiny["reference"], out)


def _processes_naming(text: str) -> list[int]:
    """The processes whose command line contains ``text``."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if text in cmdline.read_bytes().decode(errors="replace"):
                found.append(int(cmdline.parent.name))
        except OSError:
            pass
    return found


@pytest.mark.rehearsal
def test_sigusr1_stops_every_rank_of_a_torchrun_stage_and_the_rerun_resumes_it(tiny):
    """torchrun dies on SIGUSR1: the pipeline passes it on as SIGTERM, every rank checkpoints the same step, and no
    process of the stage is left running."""
    tmp, out = tiny["tmp"], tiny["tmp"] / "torchrun"
    launcher = f"{sys.executable} -m torch.distributed.run --standalone --nproc_per_node 2"
    config = tiny_config(tmp / "torchrun.yaml", tiny["data"], out, workers=2, launcher=launcher)
    env = pipeline_env(tmp, block_detectron2=True)
    proc = _start_until_checkpoint_3(config, env, out)
    stage = _processes_naming(str(out / "pretrain"))
    assert len(stage) >= 1 + 2 + 2 * 2  # torchrun, its 2 ranks and their loader workers
    proc.send_signal(signal.SIGUSR1)
    stdout, _ = proc.communicate(timeout=300)
    assert proc.returncode == EXIT_PREEMPTED, stdout[-3000:]
    assert not _processes_naming(str(out / "pretrain"))  # no rank, no worker left running
    assert "left running" not in stdout  # torchrun relayed the stop itself: nothing was orphaned
    log = (out / "pretrain" / "log.txt").read_text()
    stopped = re.findall(r"stopped by SIGTERM after step (\d+)", log)
    assert len(stopped) == 2 and stopped[0] == stopped[1]  # both ranks, the same step
    assert (out / "pretrain" / f"checkpoint_{int(stopped[0]):08d}.pth").exists()
    state = json.loads((out / "pipeline_state.json").read_text())
    assert state["pretrain"]["interrupted"] == "SIGUSR1"

    result = run_pipeline(config, env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "1. pretrain   ran (resumed after an interruption)" in result.stdout
    assert f"resumed from {out / 'pretrain' / f'checkpoint_{int(stopped[0]):08d}.pth'}" in (
        out / "pretrain" / "log.txt").read_text()


def run_in_process(capsys, *args) -> tuple[int, str]:
    """The pipeline command in this process: for the checks that end before any stage runs."""
    code = cli_main(lambda: pipeline_main([str(a) for a in args]))
    return code, capsys.readouterr().err


def test_a_stage_of_another_configuration_is_refused_before_anything_is_written(tiny, capsys):
    before = (tiny["reference"] / "config.yaml").read_text()
    opts = yaml.safe_load(open(tiny["config"]))["PRETRAIN"]["OPTS"] + ["SEED", 1]
    code, err = run_in_process(capsys, "--config-file", tiny["config"], "PRETRAIN.OPTS", str(opts))
    assert code == 2 and "holds stage 'pretrain' of another configuration" in err
    assert (tiny["reference"] / "config.yaml").read_text() == before


@pytest.mark.parametrize("opts,fragment", [
    (["DETECTION.DNS", "['mbv3_w0.625']"], "are not pretrained by"),
    (["DETECTION.INITS", "['imagenet']"], "DETECTION.INITS must be some of"),
    (["PRETRAIN.OPTS", "['SOLVER.EPOCHS']"], "PRETRAIN.OPTS must be KEY VALUE pairs"),
    (["PRETRAIN.OPTS", "['NO_SUCH_KEY', '1']"], "bad config key or value"),
    (["KNN.OPTS", "['NO_SUCH_KEY', '1']"], "bad config key or value"),
    (["KNN.CONFIG_FILE", "nowhere.yaml"], "KNN.CONFIG_FILE 'nowhere.yaml' does not exist"),
    (["NO_SUCH_KEY", "1"], "bad config key or value"),
])
def test_bad_configuration_is_one_error_line_before_anything_runs(tiny, tmp_path, capsys, opts, fragment):
    code, err = run_in_process(capsys, "--config-file", tiny["config"], "OUTPUT_DIR", tmp_path / "out", *opts)
    assert code == 2 and fragment in err and err.startswith("error:") and len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_an_output_dir_that_is_not_a_pipelines_is_refused(tiny, tmp_path, capsys):
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "results.md").write_text("someone else's\n")
    code, err = run_in_process(capsys, "--config-file", tiny["config"], "OUTPUT_DIR", tmp_path / "other")
    assert code == 2 and "is not a pipeline's folder" in err


@pytest.mark.rehearsal
def test_the_pipeline_runs_from_a_non_editable_install_outside_the_checkout(tiny):
    """``pip install .`` ships no tools/: every stage is a module of the installed package. The package is
    installed into a folder of its own, and the tiny pipeline runs in another folder, beside a copy of configs/."""
    import shutil

    tmp = tiny["tmp"]
    site, work = tmp / "site", tmp / "elsewhere"
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                              "--target", str(site), ROOT], capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stderr[-3000:]
    assert (site / "pretrain").is_dir() and (site / "dspnet_d2").is_dir() and not (site / "tools").exists()
    shutil.copytree(Path(ROOT) / "configs", work / "configs")
    config = tiny_config(work / "tiny.yaml", tiny["data"], work / "out")
    with_d2 = has_detectron2()
    env = pipeline_env(tmp, block_detectron2=not with_d2)
    env["PYTHONPATH"] = os.pathsep.join([str(site), env.get("PYTHONPATH", "")])
    where = subprocess.run([sys.executable, "-c", "import dspnet_d2, pretrain; print(dspnet_d2.__file__, "
                            "pretrain.__file__)"], cwd=work, env=env, capture_output=True, text=True)
    assert where.stdout.split() == [str(site / "dspnet_d2" / "__init__.py"), str(site / "pretrain" / "__init__.py")]

    result = subprocess.run([sys.executable, "-m", "pretrain.pipeline", "--config-file", config], cwd=work, env=env,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "$ " + sys.executable + " -m dspnet_d2.deploy.convert_to_d2" in result.stdout
    assert (work / "out" / "dspnet_supernet.pkl").exists()
    if with_d2:
        table = (work / "out" / "ap" / "detection.md").read_text()
        assert table.count("| DSPNet | mbv3_w") == 2 and table.count("| random init | mbv3_w") == 2
        assert all((work / "out" / "pictures" / f"{dn}.png").exists() for dn in ("mbv3_w0.5", "mbv3_w1.0"))
