"""Runs that survive a cluster: a signal stops every rank at one step with its checkpoint (exit status 75) and
the same command resumes exactly; a rank that hangs ends the others within DIST.TIMEOUT_MINUTES."""
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch
from pretrain_utils import assert_equal_states, descendants, tiny_data

from pretrain.engine.preemption import EXIT_PREEMPTED, ForwardedChild, StopSignals, parse_signals

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return tiny_data(tmp_path_factory.mktemp("demo"))


def _env():
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT)  # the same float math in every run


def _supervised_args(data_root, output_dir):
    return ["--config-file", "configs/supervised/demo.yaml", "DATA.ROOT", str(data_root), "OUTPUT_DIR", str(output_dir),
            "DATA.NUM_WORKERS", "2", "MODEL.DNS", "mbv3_s3", "MODEL.NUM_SUBNETS", "3", "SOLVER.BATCH_SIZE", "16",
            "SOLVER.EPOCHS", "3", "CHECKPOINT.PERIOD", "1000", "CHECKPOINT.KEEP", "20", "LOG_PERIOD", "1",
            "EVAL_PERIOD", "0", "BN_RECALIBRATION.BATCHES", "0", "EVAL_BATCH_SIZE", "16", "EXPORT", "False",
            "MODEL.EMA_DECAY", "0.9"]


def _steps(output_dir) -> list[int]:
    return sorted(int(p.stem.split("_")[1]) for p in output_dir.glob("checkpoint_*.pth"))


def _signal_mid_run(command, output_dir, after_step):
    """Start ``command``, send SIGTERM to it and its loader workers (as Slurm does) once metrics.jsonl holds step
    ``after_step``; (exit status, seconds from the signal to the exit)."""
    log = open(output_dir.parent / f"{output_dir.name}.out", "w")
    proc = subprocess.Popen(command, cwd=ROOT, env=_env(), stdout=log, stderr=subprocess.STDOUT)
    metrics, deadline = output_dir / "metrics.jsonl", time.time() + 300
    while proc.poll() is None and time.time() < deadline:
        if metrics.exists() and f'"step": {after_step},' in metrics.read_text():
            break
        time.sleep(0.02)
    start = time.monotonic()
    workers = descendants(proc.pid)
    assert len(workers) == 2
    for pid in [proc.pid, *workers]:
        os.kill(pid, signal.SIGTERM)
    status = proc.wait(timeout=120)
    log.close()
    return status, time.monotonic() - start


def _stopped_step(output_dir) -> int:
    found = re.findall(r"stopped by \S+(?: on another rank)? after step (\d+)", (output_dir / "log.txt").read_text())
    assert found, "the run did not report a stop"
    return int(found[-1])


@pytest.mark.rehearsal
def test_sigterm_stops_supervised_training_at_its_step_and_resumes_exactly(data_root, tmp_path):
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    command = [sys.executable, "-m", "pretrain.supervised"]
    subprocess.run(command + _supervised_args(data_root, straight), cwd=ROOT, env=_env(), check=True,
                   capture_output=True, timeout=600)
    status, _ = _signal_mid_run(command + _supervised_args(data_root, stopped), stopped, after_step=5)
    step = _stopped_step(stopped)
    assert status == EXIT_PREEMPTED and 5 <= step < 12 and _steps(stopped)[-1] == step
    result = subprocess.run(command + _supervised_args(data_root, stopped), cwd=ROOT, env=_env(),
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    a, b = (torch.load(d / "checkpoint_00000012.pth", weights_only=True) for d in (straight, stopped))
    for part in ("model", "ema", "optimizer"):
        assert_equal_states(a[part], b[part], part)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stalled_worker(rank, port, data_root, output_dir, stall_s):
    """One rank of a 2-rank gloo run whose rank 1 sleeps inside step 2; records its exit status and time."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    from pretrain_utils import tiny_cfg

    from pretrain.engine.trainer import Trainer, main

    cfg = tiny_cfg(data_root, output_dir, "DIST.TIMEOUT_MINUTES", "0.1", "MODEL.FULL_ONLY_EPOCHS", "0")
    step = Trainer.run_batch

    def stalled(self, batch):
        if rank == 1 and self.step == 2:
            (output_dir / "stall_started").write_text(repr(time.time()))
            time.sleep(stall_s)
        return step(self, batch)

    Trainer.run_batch = stalled
    ready = output_dir / f"ready_{rank}"  # both join the group together: its 6 s timeout also bounds the join
    output_dir.mkdir(exist_ok=True)
    ready.write_text("")
    while not all((output_dir / f"ready_{r}").exists() for r in range(2)):
        time.sleep(0.01)
    status = main(cfg)
    (output_dir / f"status_{rank}").write_text(json.dumps([status, time.time()]))


@pytest.mark.rehearsal
def test_a_rank_that_hangs_ends_the_others_within_the_timeout_naming_rank_and_step(data_root, tmp_path):
    import torch.multiprocessing as mp

    out = tmp_path / "run"
    out.mkdir()
    mp.spawn(_stalled_worker, args=(_free_port(), data_root, out, 20.0), nprocs=2)
    status, ended = json.loads((out / "status_0").read_text())
    waited = ended - float((out / "stall_started").read_text())
    assert status == 1 and 6 <= waited < 6 + 12, waited  # the 6 s timeout, not rank 1's 20 s sleep
    print(f"rank 0 failed {waited:.1f} s after rank 1 began to sleep (timeout 6 s)")
    log = (out / "log.txt").read_text()
    assert "rank 0 of 2: a collective failed at step 2 (timeout 0.1 minutes): another rank is dead or stuck" in log
    assert json.loads((out / "status_1").read_text())[0] == 1  # the sleeper fails too once it wakes
    assert "rank 1 of 2: a collective failed at step 2" in log


def test_stop_signals_only_raise_a_flag_and_restore_the_handlers():
    before = signal.getsignal(signal.SIGUSR1)
    with StopSignals(["SIGUSR1", "TERM"]) as stop:
        assert stop.agreed(1, torch.device("cpu")) is None
        os.kill(os.getpid(), signal.SIGUSR1)
        os.kill(os.getpid(), signal.SIGUSR1)  # a repeated signal (a launcher forwarding it) is harmless
        time.sleep(0.01)
        assert stop.agreed(1, torch.device("cpu")) == "SIGUSR1"
    assert signal.getsignal(signal.SIGUSR1) is before
    assert parse_signals(["usr1", "SIGTERM", "SIGUSR1"]) == (signal.SIGUSR1, signal.SIGTERM)
    for bad in ("SIGKILL", "SIGNOPE"):
        with pytest.raises(ValueError, match="CHECKPOINT.SIGNALS"):
            parse_signals([bad])


def test_a_forwarded_child_gets_the_signal_and_its_ignored_signals_stay_ignored(tmp_path):
    import threading

    script = ("import signal, sys, time\n"
              "assert signal.getsignal(signal.SIGUSR2) == signal.SIG_IGN\n"
              "signal.signal(signal.SIGTERM, lambda *a: sys.exit(75))\n"
              "open(sys.argv[1], 'w').close()\n"
              "time.sleep(60)\n")
    ready = tmp_path / "ready"
    child = ForwardedChild([sys.executable, "-c", script, str(ready)], ignore=["SIGUSR2"])

    def signal_when_ready():
        while not ready.exists():
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGTERM)  # reaches this process: passed on to the child

    threading.Thread(target=signal_when_ready, daemon=True).start()
    assert child.run() == EXIT_PREEMPTED and child.signalled == "SIGTERM"
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # restored


def test_a_forwarded_child_gets_any_stop_signal_as_sigterm(tmp_path):
    """torchrun handles TERM but dies on USR1: the pipeline's children get every stop signal as SIGTERM."""
    import threading

    script = ("import signal, sys, time\n"
              "signal.signal(signal.SIGTERM, lambda *a: sys.exit(75))\n"
              "open(sys.argv[1], 'w').close()\n"
              "time.sleep(60)\n")
    ready = tmp_path / "ready"
    child = ForwardedChild([sys.executable, "-c", script, str(ready)])

    def signal_when_ready():
        while not ready.exists():
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGUSR1)

    threading.Thread(target=signal_when_ready, daemon=True).start()
    assert child.run() == EXIT_PREEMPTED and child.signalled == "SIGUSR1"


@pytest.mark.parametrize("stubborn", [False, True], ids=["obeys_sigterm", "ignores_sigterm"])
def test_processes_a_forwarded_child_leaves_running_are_ended(tmp_path, stubborn):
    """A launcher that dies and leaves a rank running in a session of its own: the rank is re-parented to the
    parent, gets SIGTERM once the launcher has exited (SIGKILL after the grace period if it ignores it)."""
    rank = ("import os, signal, sys, time\n"
            f"signal.signal(signal.SIGTERM, {'signal.SIG_IGN' if stubborn else 'lambda *a: sys.exit(75)'})\n"
            "open(sys.argv[1], 'w').write(str(os.getpid()))\n"
            "time.sleep(60)\n")
    launcher = ("import subprocess, sys, time, os\n"
                "subprocess.Popen([sys.executable, '-c', sys.argv[1], sys.argv[2]], start_new_session=True)\n"
                "while not os.path.exists(sys.argv[2]) or not open(sys.argv[2]).read():\n"
                "    time.sleep(0.01)\n"
                "os._exit(1)\n")  # the launcher dies; its rank keeps running
    pid_file = tmp_path / "rank_pid"
    child = ForwardedChild([sys.executable, "-c", launcher, rank, str(pid_file)], orphan_grace_s=1.0)
    start = time.monotonic()
    assert child.run() == 1 and child.orphans_ended == 1
    rank_pid = int(pid_file.read_text())
    assert not os.path.exists(f"/proc/{rank_pid}")  # ended and reaped
    assert (time.monotonic() - start >= 1.0) == stubborn  # only the stubborn one waited for SIGKILL


def test_the_stop_protocol_saves_marks_and_raises_only_once_a_signal_came(tmp_path):
    from dspnet_d2.runtime.stopping import STOP_MARKER, Preempted, StopProtocol

    (tmp_path / STOP_MARKER).write_text("{}")  # an earlier stop, over once the run starts again
    saved = []
    with StopProtocol(str(tmp_path), ["SIGUSR1"]) as stops:
        assert not (tmp_path / STOP_MARKER).exists()
        stops.check(3, lambda: saved.append(3))
        assert saved == []  # no signal: no save, no stop
        os.kill(os.getpid(), signal.SIGUSR1)
        time.sleep(0.01)
        with pytest.raises(Preempted, match="stopped by SIGUSR1 after iteration 4 of 9"):
            stops.check(4, lambda: saved.append(4), where="iteration 4 of 9")
    assert saved == [4]
    assert json.loads((tmp_path / STOP_MARKER).read_text()) == {"signal": "SIGUSR1", "step": 4,
                                                               "exit_status": EXIT_PREEMPTED}


def test_errors_and_stopping_import_without_a_cycle():
    script = ("import sys, dspnet_d2.errors as e\n"
              "assert 'dspnet_d2.runtime.stopping' not in sys.modules\n"
              "import dspnet_d2.runtime.stopping as s\n"
              "assert s.Preempted is e.Preempted and s.EXIT_PREEMPTED == e.EXIT_PREEMPTED == 75\n")
    subprocess.run([sys.executable, "-c", script], check=True, cwd=os.path.dirname(os.path.dirname(__file__)))


def test_the_clean_up_of_a_stage_waits_a_bounded_time_for_a_process_sigkill_cannot_end(monkeypatch):
    """A process in uninterruptible I/O outlives SIGKILL: the clean-up returns it after the grace periods instead
    of waiting without bound (simulated: the process is never reported as ended)."""
    from pretrain.engine import preemption

    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    sent = []
    monkeypatch.setattr(preemption, "_send", lambda pid, sig: sent.append(sig))
    monkeypatch.setattr(preemption.os, "waitpid", lambda pid, flags: (0, 0))
    start = time.monotonic()
    assert preemption.end_processes([sleeper.pid], grace_s=0.2, kill_grace_s=0.3) == {sleeper.pid}
    assert 0.5 <= time.monotonic() - start < 5 and sent == [signal.SIGTERM, signal.SIGKILL]
    monkeypatch.undo()
    sleeper.kill()
    sleeper.wait()


def test_a_forwarded_child_is_ended_when_waiting_for_it_is_interrupted(tmp_path, monkeypatch):
    """The clean-up runs in a ``finally``: an exception while waiting still ends the child and what it left."""
    from pretrain.engine import preemption

    child = ForwardedChild([sys.executable, "-c", "import time; time.sleep(60)"], orphan_grace_s=5)
    calls = {"n": 0}
    real_sleep = time.sleep

    def interrupted_sleep(seconds):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        real_sleep(seconds)

    monkeypatch.setattr(preemption.time, "sleep", interrupted_sleep)
    with pytest.raises(KeyboardInterrupt):
        child.run()
    monkeypatch.undo()
    assert child.proc.returncode == -signal.SIGTERM


def test_a_detectron2_evaluation_a_stop_came_before_is_skipped(tmp_path):
    """The final evaluation after a stop at the last iteration (detectron2 runs it in ``after_train``, even when
    training ends by an exception) is left to the rerun; without a stop it runs."""
    pytest.importorskip("detectron2")
    from types import SimpleNamespace

    from dspnet_d2.d2.train import StoppableEvalHook
    from dspnet_d2.runtime.stopping import StopProtocol

    for stopped in (False, True):
        evaluated = []
        stops = StopProtocol(str(tmp_path), signals=[])
        stops.signals.requested = "SIGTERM" if stopped else None
        hook = StoppableEvalHook(4, lambda: evaluated.append(1) or {}, stops)
        hook.trainer = SimpleNamespace(iter=7, max_iter=8, storage=None)
        hook.after_train()
        assert evaluated == ([] if stopped else [1])
