"""tools/select_dn.py and dspnet_d2.deploy.selection: the choice under budgets, the Pareto front, the measurement cache,
the join with a run's results, an end-to-end run that exports the chosen DN, and the user's mistakes.

``tests/data/demo_knn_results.json`` is a results.json written by ``python -m pretrain.eval --config-file
configs/eval/demo_knn.yaml ... DNS all`` on the checkpoint of a 2-epoch run of ``tests/pretrain_utils.tiny_cfg``
(mbv3_s3, demo data, 32 px): the evaluation's own layout, random inits with their spread included.
"""
import csv
import json
import pathlib
import shutil

import pytest
import torch
from conftest import randomize_bn_stats
from pretrain_utils import run_tool
from test_cli_errors import assert_one_error_line

from dspnet_d2 import DN_SETS, build_static_dn, build_supernet, parse_dn, slice_dn
from dspnet_d2.deploy.formats import run_onnx
from dspnet_d2.deploy.selection import Budget, Settings, choose, pareto_front, read_accuracies, select_dn
from dspnet_d2.deploy.selection.measure import CACHE_FILE
from dspnet_d2.deploy.selection.runners import deploy
from dspnet_d2.deploy.selection.settings import runtimes
from dspnet_d2.errors import InvalidInputError
from dspnet_d2.weights import read_weights, save_dn_file

DEMO_RESULTS = pathlib.Path(__file__).parent / "data" / "demo_knn_results.json"
LOW_RES = Settings(resolution=32, threads=1, warmup=0, repeats=3)  # the fake clock needs no warm-up


def row(dn, ms, gflops, acc=None, params_m=1.0, memory=10.0):
    return {"dn": dn, "latency_ms": ms, "latency_q1_ms": ms, "latency_q3_ms": ms, "flops": gflops * 1e9,
            "params": params_m * 1e6, "memory_mb": memory, **({"top-1": acc} if acc is not None else {})}


ROWS = [row("a", 5, 0.1, 60.0, memory=20), row("b", 8, 0.2, 65.0, memory=30), row("c", 9, 0.3, 64.0, memory=35),
        row("d", 15, 0.4, 70.0, params_m=5, memory=60)]


def test_pareto_front_keeps_what_no_other_dn_beats():
    assert pareto_front(ROWS, "latency_ms", "top-1") == {"a", "b", "d"}  # c: slower and less accurate than b
    assert pareto_front(ROWS, "flops", "top-1") == {"a", "b", "d"}
    assert pareto_front([*ROWS, row("e", 5, 0.1, 60.0)], "latency_ms", "top-1") >= {"a", "e"}  # ties both stay
    assert pareto_front([row("x", 5, 0.1)], "latency_ms", "top-1") == set()  # no accuracy: not on the front


def test_the_most_accurate_dn_within_every_budget_and_why():
    assert choose(ROWS, Budget(), "top-1", "top-1").dn == "d"
    choice = choose(ROWS, Budget(latency_ms=10), "top-1", "top-1")
    assert choice.dn == "b" and choice.within_budget == ("a", "b", "c")
    assert "the highest top-1 (65.00) of the 3 of 4 DNs within latency <= 10 ms" in choice.reason
    assert "over budget: d (latency 15.0 ms)" in choice.reason
    assert choose(ROWS, Budget(latency_ms=10, memory_mb=25), "top-1", "top-1").dn == "a"
    assert choose(ROWS, Budget(params_m=2, flops_g=0.35), "top-1", "top-1").dn == "b"
    # without accuracies: the largest (FLOPs) within budget; ties on the score go to the faster
    assert choose(ROWS, Budget(latency_ms=9)).dn == "c"
    assert choose([row("slow", 9, 0.3), row("fast", 7, 0.3)], Budget()).dn == "fast"


def test_a_budget_no_dn_meets_names_the_best_dn_on_it():
    with pytest.raises(InvalidInputError, match=r"no DN meets latency <= 3 ms \(eager\): the fastest is a "
                                                r"\(latency 5.0 ms\)"):
        choose(ROWS, Budget(latency_ms=3), "top-1", "top-1", settings_text="eager")
    with pytest.raises(InvalidInputError, match=r"no DN meets FLOPs <= 0.05 G: the smallest is a \(FLOPs 0.100 G\)"):
        choose(ROWS, Budget(flops_g=0.05))
    with pytest.raises(InvalidInputError, match="no DN meets latency <= 6 ms, memory <= 15 MB together"):
        choose([row("a", 5, 0.1, memory=20), row("b", 8, 0.1, memory=10)], Budget(latency_ms=6, memory_mb=15))
    with pytest.raises(InvalidInputError, match="a budget is a positive number"):
        choose(ROWS, Budget(latency_ms=-1))


class FakeClock:
    """Latency in proportion to the parameter count (deterministic); records every call."""

    def __init__(self):
        self.calls = []

    def __call__(self, name, run, x):
        self.calls.append(name)
        return {"mbv3_w0.5": 0.004, "mbv3_w0.75": 0.006, "mbv3_w1.0": 0.009}[name]


def fake_memory(deployed, settings, x):
    return deployed.weight_bytes * 2


def test_measurements_are_interleaved_and_cached(tmp_path, capsys):
    clock = FakeClock()
    first = select_dn("mbv3_s3", tmp_path, settings=LOW_RES, timer=clock, memory=fake_memory)
    assert clock.calls == ["mbv3_w0.5", "mbv3_w0.75", "mbv3_w1.0"] * 3  # round-robin: noise hits all alike
    assert first.choice.dn == "mbv3_w1.0" and "ranked by size" in first.notes[0]  # no results: the largest
    rows = {r["dn"]: r for r in first.rows}
    assert rows["mbv3_w0.75"]["latency_ms"] == pytest.approx(6.0) and rows["mbv3_w0.75"]["samples_ms"] == [6.0] * 3
    assert rows["mbv3_w0.5"]["params"] < rows["mbv3_w1.0"]["params"] and rows["mbv3_w0.5"]["memory_mb"] > 0
    assert all(r["pareto"] for r in first.rows)  # faster means smaller here: every DN is on the front

    assert not any(r["cached"] for r in first.rows)

    again = FakeClock()  # a new budget: nothing measured again
    second = select_dn("mbv3_s3", tmp_path, budget=Budget(latency_ms=7), settings=LOW_RES, timer=again,
                       memory=lambda *a: pytest.fail("memory measured again"))
    assert again.calls == [] and second.choice.dn == "mbv3_w0.75"
    assert "3 of 3 DNs from the cache" in capsys.readouterr().out
    assert all(r["cached"] for r in second.rows)
    measured_on = second.rows[0]["measured"][:10]
    assert f"| yes | {measured_on} |" in (tmp_path / "dn_selection.md").read_text()  # the rows from the cache
    select_dn("mbv3_s3", tmp_path, settings=Settings(resolution=32, threads=1, batch=2, warmup=0, repeats=1),
              timer=again, memory=fake_memory)  # another batch is another measurement
    assert again.calls == ["mbv3_w0.5", "mbv3_w0.75", "mbv3_w1.0"]


def test_a_measurement_of_other_rounds_is_no_cache_hit(tmp_path):
    select_dn("mbv3_s3", tmp_path, settings=LOW_RES, timer=FakeClock(), memory=fake_memory)  # 3 timed rounds
    clock = FakeClock()
    more = select_dn("mbv3_s3", tmp_path, settings=Settings(resolution=32, threads=1, warmup=0, repeats=5),
                     timer=clock, memory=fake_memory)
    assert clock.calls == ["mbv3_w0.5", "mbv3_w0.75", "mbv3_w1.0"] * 5
    assert all(len(r["samples_ms"]) == 5 and not r["cached"] for r in more.rows)
    assert "median of 5 rounds" in (tmp_path / "dn_selection.md").read_text()
    clock = FakeClock()
    warmed = select_dn("mbv3_s3", tmp_path, settings=Settings(resolution=32, threads=1, warmup=1, repeats=5),
                       timer=clock, memory=fake_memory)  # the warm-up counts too: a cold first round is no figure
    assert len(clock.calls) == 15 and not any(r["cached"] for r in warmed.rows)
    again = select_dn("mbv3_s3", tmp_path, settings=LOW_RES, timer=lambda *a: pytest.fail("measured again"),
                      memory=fake_memory)
    assert all(r["cached"] and len(r["samples_ms"]) == 3 for r in again.rows)


def test_join_with_the_demo_evaluation_results(tmp_path):
    columns, table = read_accuracies([str(DEMO_RESULTS)])
    assert columns == ["DSPNet knn top-1", "initial weights knn top-1", "random init knn top-1"]
    expected = {r["dn"]: r["top1"] for r in json.loads(DEMO_RESULTS.read_text())["results"] if r["series"] == "DSPNet"}
    assert {dn: values["DSPNet knn top-1"] for dn, values in table.items()} == {dn: {32: v} for dn, v in expected.items()}

    detection = tmp_path / "ap" / "detection.csv"  # tools/detection_report.py's columns
    detection.parent.mkdir()
    with open(detection, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["series", "dn", "params", "flops", "bbox/AP", "segm/AP"])
        writer.writeheader()
        writer.writerow({"series": "DSPNet", "dn": "mbv3_w0.5", "params": 1, "flops": 1, "bbox/AP": 25.4,
                         "segm/AP": 32.4})
    copy = tmp_path / "again" / "results.json"
    copy.parent.mkdir()
    copy.write_text(DEMO_RESULTS.read_text())
    columns, table = read_accuracies([str(DEMO_RESULTS), str(detection.parent), str(copy)])
    assert columns[3:6] == ["DSPNet AP^bb", "DSPNet AP^mk", "DSPNet knn top-1 [again]"]
    assert table["mbv3_w0.5"]["DSPNet AP^mk"] == {None: 32.4} and "DSPNet AP^bb" not in table["mbv3_w1.0"]

    best = max(expected, key=expected.get)
    selection = select_dn("mbv3_s3", tmp_path / "out", results=[str(DEMO_RESULTS)], settings=LOW_RES,
                          timer=FakeClock(), memory=fake_memory)
    assert selection.rank_by == "DSPNet knn top-1" and selection.choice.dn == best
    by_size = select_dn("mbv3_s3", tmp_path / "out", results=[str(DEMO_RESULTS)], rank_by="random init knn top-1",
                        budget=Budget(latency_ms=5), settings=LOW_RES, timer=FakeClock(), memory=fake_memory)
    assert by_size.choice.dn == "mbv3_w0.5"
    table_md = (tmp_path / "out" / "dn_selection.md").read_text()
    assert "| random init knn top-1 |" in table_md and "Ranked by random init knn top-1" in table_md


def results_at(path, resolutions: dict[str, int]) -> str:
    """The demo results.json with its DSPNet results of the DNs of ``resolutions`` only, each evaluated at its
    resolution there."""
    results = [{**r, "resolution": resolutions[r["dn"]]} for r in json.loads(DEMO_RESULTS.read_text())["results"]
               if r["series"] == "DSPNet" and r["dn"] in resolutions]
    path.write_text(json.dumps({"results": results}))
    return str(path)


def test_accuracies_join_at_the_resolution_the_dns_are_measured_at(tmp_path):
    top1 = {r["dn"]: r["top1"] for r in json.loads(DEMO_RESULTS.read_text())["results"] if r["series"] == "DSPNet"}
    results = results_at(tmp_path / "results.json", {"mbv3_w0.5": 32, "mbv3_w1.0": 64})  # mbv3_w0.75: none
    selection = select_dn("mbv3_s3", tmp_path / "at32", results=[results], settings=LOW_RES, timer=FakeClock(),
                          memory=fake_memory)
    rows = {r["dn"]: r for r in selection.rows}
    assert rows["mbv3_w0.5"]["DSPNet knn top-1"] == top1["mbv3_w0.5"]
    assert "DSPNet knn top-1" not in rows["mbv3_w1.0"]  # its 64 px accuracy is no figure of the 32 px DN
    assert selection.choice.dn == "mbv3_w0.5"  # the only DN with a 32 px accuracy, though mbv3_w1.0 scores more
    assert top1["mbv3_w1.0"] > top1["mbv3_w0.5"]
    assert selection.notes == [
        "DSPNet knn top-1 evaluated at 64 px, not at the 32 px measured: not joined for mbv3_w1.0",
        "without DSPNet knn top-1, left out of the ranking: mbv3_w0.75 (not in the results), mbv3_w1.0 (evaluated "
        "at 64 px only)"]
    table = (tmp_path / "at32" / "dn_selection.md").read_text()
    assert all(f"{note}." in table for note in selection.notes)

    with pytest.raises(InvalidInputError, match=r"none of the 3 DNs within no budget has DSPNet knn top-1 \("
                                                r"mbv3_w0.5: evaluated at 32 px only, mbv3_w0.75: not in the results, "
                                                r"mbv3_w1.0: evaluated at 64 px only\)"):
        select_dn("mbv3_s3", tmp_path / "at48", results=[results], settings=Settings(resolution=48, threads=1,
                  warmup=0, repeats=3), timer=FakeClock(), memory=fake_memory)
    assert "evaluated at 32 px, not at the 48 px measured: not joined for mbv3_w0.5" in (
        tmp_path / "at48" / "dn_selection.md").read_text()  # the table of every DN is written all the same


def test_every_runtime_runs_the_dn_it_times(tmp_path):
    """What is timed computes the DN: each runtime's output equals the model's (the fresh process that measures
    memory loads the same files with the same ``load_runner``: the end-to-end test runs it)."""
    model = build_static_dn(parse_dn("mbv3_w0.5"), num_classes=10).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = model(x)
    for runtime in runtimes():
        if runtime == "onnxruntime":
            pytest.importorskip("onnxruntime", reason="the deploy extra: pip install -e '.[deploy]'")
        settings = Settings(runtime, threads=1)
        deployed = deploy(model, settings, str(tmp_path), "mbv3_w0.5", 32)
        with torch.no_grad():
            got = deployed.run(x)
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Two exported DNs of a supernet with random weights and BN statistics, a 10-class classifier."""
    folder = tmp_path_factory.mktemp("export")
    torch.manual_seed(0)
    supernet = build_supernet(DN_SETS["mbv3_s3"], num_classes=10)
    with torch.no_grad():
        randomize_bn_stats(supernet)
    for dn in map(parse_dn, ("mbv3_w0.5", "mbv3_w0.75")):
        save_dn_file(str(folder / f"{dn}.pth"), dn, slice_dn(supernet, dn).state_dict())
    return folder


def test_end_to_end_on_exported_dns_writes_the_table_plot_and_a_checked_onnx(exported, tmp_path, capsys, monkeypatch):
    pytest.importorskip("onnxruntime", reason="the deploy extra: pip install -e '.[deploy]'")
    out = tmp_path / "out"
    result = run_tool("select_dn", [exported, "--results", DEMO_RESULTS, "--resolution", 32, "--threads", 1, "--warmup",
                                    1, "--repeats", 3, "--export", "onnx", "-o", out], capsys, monkeypatch)
    assert result.code == 0, result.err
    chosen = json.loads((out / "dn_selection.json").read_text())["chosen"]
    assert chosen == "mbv3_w0.75"  # the better DSPNet kNN top-1 of the two, no budget
    assert f"chosen: {chosen}: the highest DSPNet knn top-1 (31.25)" in result.out
    assert "results of DNs not among the sources, left out: mbv3_w1.0" in result.out
    assert "left out of the ranking" not in result.out  # both DNs have their 32 px accuracy
    rows = list(csv.DictReader(open(out / "dn_selection.csv")))
    assert [r["dn"] for r in rows] == ["mbv3_w0.5", "mbv3_w0.75"]
    assert all(float(r["latency_ms"]) > 0 and float(r["memory_mb"]) > 1 for r in rows)  # measured for real
    assert float(rows[0]["flops"]) < float(rows[1]["flops"]) and rows[1]["chosen"] == "True"
    assert "**mbv3_w0.75** (chosen)" in (out / "dn_selection.md").read_text()
    png = (out / "dn_selection.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert "max |onnx - PyTorch|" in result.out  # tools/export_dn.py's parity check ran
    model, _ = read_weights(str(exported / f"{chosen}.pth")).model(classifier=True)
    images = torch.randn(3, 3, 32, 32)  # a batch the export never saw
    with torch.no_grad():
        torch.testing.assert_close(run_onnx(str(out / f"{chosen}.onnx"), images), model(images), atol=1e-4, rtol=1e-4)


@pytest.fixture(scope="module")
def fake_cache(tmp_path_factory):
    """The measurement cache of mbv3_s3 at 32 px as the tool's defaults key it (3 warm-up and 20 timed rounds),
    filled by the fake clock."""
    out = tmp_path_factory.mktemp("fake_cache")
    select_dn("mbv3_s3", out, settings=Settings(resolution=32), timer=FakeClock(), memory=fake_memory)
    return out / CACHE_FILE


@pytest.mark.parametrize("args,fragment", [
    (["--runtime", "tensorrt"], "unknown runtime 'tensorrt'; choose one of eager, torchscript, onnxruntime"),
    (["--device", "tpu"], "unknown device 'tpu'"),
    (["--runtime", "onnxruntime", "--channels-last"], "--channels-last applies to the eager, torchscript and pt2"),
    (["--threads", "0"], "threads must be at least 1"),
    (["--results", "no_such_results.json"], "results file no_such_results.json does not exist"),
    (["--rank-by", "top-1"], "--rank-by 'top-1' is not an accuracy column"),
    (["--export", "onnx"], "--export needs trained weights"),
    (["--export-file", "x.onnx"], "go with --export FORMAT"),
    (["--max-latency-ms", "0.001"], "no DN meets latency <= 0.001 ms (eager on cpu"),
    (["--max-flops", "1e-6"], "no DN meets FLOPs <= 1e-06 G"),
])
def test_mistakes_end_with_one_error_line(args, fragment, fake_cache, tmp_path, capsys, monkeypatch):
    shutil.copy(fake_cache, tmp_path)  # the tool measures nothing: the fake clock's figures are in the cache
    result = run_tool("select_dn", ["mbv3_s3", "--resolution", 32, *args, "-o", tmp_path], capsys, monkeypatch)
    assert_one_error_line(result.code, result.err, fragment)


@pytest.mark.parametrize("source,fragment", [
    ("no/such/folder", "no/such/folder does not exist"),
    ("mbv3_w0.33", "mbv3_w0.33 is no file or folder here, and 'mbv3_w0.33' is neither a DN set"),
    ("garbage", "is not a dspnet checkpoint"),
    ("empty", "holds no exported DN"),
    ("cuda", "CUDA is absent on this machine"),
])
def test_bad_sources_and_devices(source, fragment, tmp_path, capsys, monkeypatch):
    args = [source]
    if source == "garbage":
        args = [tmp_path / "garbage.pth"]
        args[0].write_bytes(b"no checkpoint")
    elif source == "empty":
        args = [tmp_path / "empty"]
        args[0].mkdir()
    elif source == "cuda":
        if torch.cuda.is_available():
            pytest.skip("this machine has CUDA")
        args = ["mbv3_s3", "--device", "cuda"]
    result = run_tool("select_dn", [*args, "-o", tmp_path / "out"], capsys, monkeypatch)
    assert_one_error_line(result.code, result.err, fragment)


def test_the_dns_left_out_of_the_ranking_are_named_on_stdout(fake_cache, tmp_path, capsys, monkeypatch):
    shutil.copy(fake_cache, tmp_path)  # measured at 32 px by the fake clock
    results = results_at(tmp_path / "results.json", {"mbv3_w0.5": 32, "mbv3_w0.75": 32, "mbv3_w1.0": 224})
    result = run_tool("select_dn", ["mbv3_s3", "--resolution", 32, "--results", results, "-o", tmp_path], capsys,
                      monkeypatch)
    assert result.code == 0, result.err
    assert "DSPNet knn top-1 evaluated at 224 px, not at the 32 px measured: not joined for mbv3_w1.0." in result.out
    assert "without DSPNet knn top-1, left out of the ranking: mbv3_w1.0 (evaluated at 224 px only)." in result.out
    assert "chosen: mbv3_w0.75: the highest DSPNet knn top-1 (31.25)" in result.out
