"""A user's mistake ends every command with one line ``error: ...`` and status 2; a bug keeps its traceback.

Each command runs once as a real subprocess (the three in parallel: each pays torch's import, seconds
on a small CPU); the other mistakes run through the same entry points in this process.
"""
import json
import subprocess
import sys

import pytest
import torch
from pretrain_utils import ToolResult, run_tool, tiny_data

from dspnet_d2.demo.make_demo_data import make_demo_dataset
from dspnet_d2.dn import parse_dn
from dspnet_d2.errors import cli_main
from dspnet_d2.images import ImageFolderIO
from dspnet_d2.weights import DN_FORMAT, PRETRAIN_FORMAT
from pretrain.__main__ import main as pretrain_main
from pretrain.eval.__main__ import main as eval_main

ROOT = __file__.rsplit("/tests/", 1)[0]
BAD_DN = "mbv3_w0.33"
# a small supernet and batch, so a run that gets as far as building its trainer does so in a second
TINY_RECIPE = """\
MODEL: {DNS: "mbv3_s3", NUM_SUBNETS: 3, PROJ_HIDDEN: 32, PROJ_DIM: 16}
DATA: {RESOLUTION: 32, NUM_WORKERS: 0}
SOLVER: {BATCH_SIZE: 16, EPOCHS: 1}
DEVICE: "cpu"
"""


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli_errors")
    paths = {"recipe": root / "tiny.yaml", "garbage": root / "garbage.pth", "exported": root / "mbv3_w0.5.pth",
             "torchvision": root / "tv.pth", "data": tiny_data(root / "data")}
    paths["recipe"].write_text(TINY_RECIPE)
    paths["garbage"].write_bytes(b"these bytes are no checkpoint")
    torch.save({"format": DN_FORMAT, "dn": "mbv3_w0.5", "state_dict": {}}, paths["exported"])
    torch.save({"features.0.0.weight": torch.zeros(16, 3, 3, 3)}, paths["torchvision"])  # a MobileNetV3 file
    return paths


def assert_one_error_line(returncode, stderr, fragment):
    assert returncode == 2, stderr
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("error: ") and fragment in lines[-1], stderr
    assert sum(line.startswith("error: ") for line in lines) == 1, stderr


# -- the real commands ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def subprocess_runs(files, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli_out")
    commands = {
        "pretrain": ["-m", "pretrain", "--config-file", str(files["recipe"]), "MODEL.DNS", BAD_DN,
                     "OUTPUT_DIR", str(out / "pretrain")],
        "eval": ["-m", "pretrain.eval", "--config-file", "configs/eval/knn.yaml", "PRETRAINED", str(files["garbage"]),
                 "OUTPUT_DIR", str(out / "eval")],
        "convert_to_d2": ["tools/convert_to_d2.py", str(files["garbage"]), "-o", str(out / "x.pkl")],
    }
    running = {name: subprocess.Popen([sys.executable, *args], cwd=ROOT, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True) for name, args in commands.items()}
    results = {}
    for name, proc in running.items():
        _, stderr = proc.communicate(timeout=300)
        results[name] = proc.returncode, stderr
    return results


@pytest.mark.parametrize("command,fragment", [("pretrain", "not on the mbv3 grid"),
                                              ("eval", "is not a dspnet checkpoint"),
                                              ("convert_to_d2", "is not a dspnet checkpoint")])
def test_command_prints_one_error_line(subprocess_runs, command, fragment):
    assert_one_error_line(*subprocess_runs[command], fragment)


# each tool run as its script, in turn, in one process without detectron2 (one torch import instead of three):
# its exit status, and its stderr with the traceback an uncaught exception would print
WITHOUT_DETECTRON2 = """\
import contextlib, io, json, runpy, sys, traceback
sys.modules["detectron2"] = None
results = {}
for tool in sys.argv[1:]:
    sys.argv, stderr = [f"tools/{tool}.py"], io.StringIO()
    with contextlib.redirect_stderr(stderr):
        try:
            runpy.run_path(f"tools/{tool}.py", run_name="__main__")
            code = 0
        except SystemExit as exit_:
            code = exit_.code
        except BaseException:
            traceback.print_exc()
            code = 1
    results[tool] = code, stderr.getvalue()
print(json.dumps(results))
"""


def test_detectron2_tools_without_detectron2_say_so():
    tools = ["train_net", "draw_predictions", "export_d2"]
    result = subprocess.run([sys.executable, "-c", WITHOUT_DETECTRON2, *tools], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    results = json.loads(result.stdout)
    assert list(results) == tools
    for tool in tools:
        assert_one_error_line(*results[tool], "needs detectron2")


# -- every mistake, through the same entry points in this process ---------------------------------------
def run_module(main, args, capsys) -> ToolResult:
    returncode = cli_main(lambda: main([str(a) for a in args]))
    captured = capsys.readouterr()
    return ToolResult(returncode, captured.out, captured.err)


@pytest.mark.parametrize("case,fragment", [
    ("bad_dn", "not on the mbv3 grid"),
    ("unknown_key", "Non-existent key: MODEL.NOT_A_KEY"),
    ("missing_config", "config file"),
    ("missing_data", "image folder"),
    ("garbage_checkpoint", "is not a dspnet pretraining checkpoint"),
    ("checkpoint_of_another_run", "belongs to another run; refusing to resume from it. recipe: checkpoint"),
])
def test_pretrain_mistakes(files, tmp_path, capsys, case, fragment):
    out = tmp_path / "out"
    recipe = files["recipe"]
    overrides = ["DATA.ROOT", files["data"], "OUTPUT_DIR", out]
    if case == "bad_dn":
        overrides += ["MODEL.DNS", BAD_DN]
    elif case == "unknown_key":
        overrides += ["MODEL.NOT_A_KEY", "1"]
    elif case == "missing_config":
        recipe = tmp_path / "no_such_recipe.yaml"
    elif case == "missing_data":
        overrides += ["DATA.ROOT", tmp_path / "no_such_data"]
    else:  # found in OUTPUT_DIR as the newest checkpoint, so the run tries to resume from it
        out.mkdir()
        if case == "garbage_checkpoint":
            (out / "checkpoint_00000001.pth").write_bytes(files["garbage"].read_bytes())
        else:
            torch.save({"format": PRETRAIN_FORMAT, "signature": {"recipe": "another"}}, out / "checkpoint_00000001.pth")
    result = run_module(pretrain_main, ["--config-file", recipe, *overrides], capsys)
    assert_one_error_line(result.code, result.err, fragment)


@pytest.mark.parametrize("case,fragment", [
    ("bad_dn", "not on the mbv3 grid"),
    ("unknown_key", "Non-existent key: KNN.NOT_A_KEY"),
    ("missing_config", "config file"),
    ("missing_data", "image folder"),
    ("garbage_checkpoint", "is not a dspnet checkpoint"),
    ("missing_checkpoint", "does not exist"),
])
def test_eval_mistakes(files, tmp_path, capsys, case, fragment):
    config, pretrained = "configs/eval/knn.yaml", files["exported"]
    overrides = ["DATA.ROOT", files["data"], "DATA.NUM_WORKERS", "0", "OUTPUT_DIR", tmp_path / "out"]
    if case == "bad_dn":
        overrides += ["DNS", BAD_DN]
    elif case == "unknown_key":
        overrides += ["KNN.NOT_A_KEY", "1"]
    elif case == "missing_config":
        config = tmp_path / "no_such_protocol.yaml"
    elif case == "missing_data":
        overrides += ["DATA.ROOT", tmp_path / "no_such_data"]
    elif case == "garbage_checkpoint":
        pretrained = files["garbage"]
    else:
        pretrained = tmp_path / "no_such_checkpoint.pth"
    result = run_module(eval_main, ["--config-file", config, "PRETRAINED", pretrained, *overrides], capsys)
    assert_one_error_line(result.code, result.err, fragment)


@pytest.mark.parametrize("case,fragment", [
    ("bad_dn", "not on the mbv3 grid"),
    ("garbage_checkpoint", "is not a dspnet checkpoint"),
    ("missing_checkpoint", "No such file"),
    ("other_architecture", "do not hold DN resnet_w1.0_d2222"),
])
def test_convert_to_d2_mistakes(files, tmp_path, capsys, monkeypatch, case, fragment):
    source, dn = {"bad_dn": (files["exported"], BAD_DN), "garbage_checkpoint": (files["garbage"], "mbv3_w0.5"),
                  "missing_checkpoint": (tmp_path / "no_such.pth", "mbv3_w0.5"),
                  "other_architecture": (files["torchvision"], "resnet18")}[case]
    result = run_tool("convert_to_d2", [source, "--dn", dn, "-o", tmp_path / "x.pkl"], capsys, monkeypatch)
    assert_one_error_line(result.code, result.err, fragment)
    assert not (tmp_path / "x.pkl").exists()


def test_dn_table_report_and_demo_data_mistakes(tmp_path, capsys, monkeypatch):
    result = run_tool("dn_table", ["--family", BAD_DN], capsys, monkeypatch)
    assert_one_error_line(result.code, result.err, "neither a DN set")

    run = tmp_path / "run"  # a finished detection run whose config names a bad DN
    run.mkdir()
    (run / "config.yaml").write_text(f"MODEL:\n  DSPNET:\n    DN: {BAD_DN}\n")
    metrics = {f"{task}/{name}": 1.0 for task in ("bbox", "segm") for name in ("AP", "AP50", "AP75")}
    (run / "metrics.json").write_text(json.dumps(metrics) + "\n")
    result = run_tool("detection_report", [run, "-o", tmp_path / "report"], capsys, monkeypatch)
    assert_one_error_line(result.code, result.err, "not on the mbv3 grid")

    (tmp_path / "foreign" / "train" / "cat").mkdir(parents=True)  # data that is not the demo's
    result = run_tool("make_demo_data", ["--root", tmp_path / "foreign"], capsys, monkeypatch)
    assert_one_error_line(result.code, result.err, "refusing to overwrite")


# -- what the wrapper lets through ------------------------------------------------------------------------
def test_a_bug_keeps_its_traceback():
    def buggy_main():
        raise ValueError("an internal invariant broke")  # a plain ValueError is no user error

    with pytest.raises(ValueError, match="internal invariant"):
        cli_main(buggy_main)


def test_user_errors_are_still_the_builtins_callers_catch(tmp_path):
    with pytest.raises(ValueError):
        parse_dn(BAD_DN)
    with pytest.raises(FileNotFoundError):
        ImageFolderIO(str(tmp_path / "nothing"))
    (tmp_path / "train" / "cat").mkdir(parents=True)
    with pytest.raises(FileExistsError):
        make_demo_dataset(tmp_path)


def test_an_error_is_one_line_without_a_third_party_warning(tmp_path):
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "pretrain", "--config-file", str(tmp_path / "absent.yaml")],
                            capture_output=True, text=True)
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        f"error: config file '{tmp_path / 'absent.yaml'}' does not exist"]
