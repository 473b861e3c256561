"""The pipeline's stages as child processes, and the state that makes a rerun skip what is done and resume what
was interrupted (``pipeline_state.json``: each stage's configuration fingerprint, commands, status, time)."""
from __future__ import annotations

import json
import os
import shlex
import sys
import time

from dspnet_d2.dn import largest_dn, parse_dn, smallest_dn
from dspnet_d2.errors import ExistingFileError, InvalidInputError, MissingFileError, UserError

from ..engine.checkpoint import latest_checkpoint
from ..engine.config import load_cfg
from ..engine.preemption import EXIT_PREEMPTED, FORWARDED_SIGNALS, ForwardedChild, StopSignals
from ..engine.recipe import merge_cfg, recipe_dns
from ..eval.config import get_eval_cfg
from .config import CHEAP_STAGES, SERIES, STAGES, STATE_FILE
from .report import print_summary, write_report

__all__ = ["Pipeline", "StageFailed", "StageInterrupted"]



def strings(opts) -> list[str]:
    return [str(o) for o in opts]


def detectron2_missing() -> str | None:
    """Why the detectron2 stages cannot run here, or None."""
    try:
        import detectron2  # noqa: F401
    except ImportError as err:
        return f"detectron2 is not installed ({err}); see docs/DETECTION.md"
    return None


class Pipeline:
    stages = STAGES

    def __init__(self, cfg, config_file: str):
        self.cfg, self.config_file, self.out = cfg, config_file, cfg.OUTPUT_DIR
        # the pretraining recipe decides the DNs; loading it here also checks its keys before anything runs
        self.pretrain_cfg = load_cfg(cfg.PRETRAIN.CONFIG_FILE, strings(cfg.PRETRAIN.OPTS))
        merge_cfg(get_eval_cfg(), cfg.KNN.CONFIG_FILE, strings(cfg.KNN.OPTS), "pretrain/eval/config.py")
        self.dns = recipe_dns(self.pretrain_cfg)
        self.detection_dns = self._detection_dns()
        self.paths = {"pretrain": os.path.join(self.out, "pretrain"), "knn": os.path.join(self.out, "knn"),
                      "pkl": os.path.join(self.out, "dspnet_supernet.pkl"), "ap_table": os.path.join(self.out, "ap"),
                      "pictures": os.path.join(self.out, "pictures"), "report": os.path.join(self.out, "report.md")}
        self.state_path = os.path.join(self.out, STATE_FILE)
        self.state = self._load_state()
        self.summary: dict[str, str] = {}

    def _detection_dns(self) -> list[str]:
        if not self.cfg.DETECTION.DNS:
            return list(dict.fromkeys([str(smallest_dn(self.dns)), str(largest_dn(self.dns))]))
        chosen = [parse_dn(d) for d in self.cfg.DETECTION.DNS]
        outside = [str(d) for d in chosen if d not in self.dns]
        if outside:
            raise InvalidInputError(f"DETECTION.DNS {outside} are not pretrained by {self.cfg.PRETRAIN.CONFIG_FILE} "
                                    f"(its DNs: {', '.join(map(str, self.dns))})")
        return list(dict.fromkeys(map(str, chosen)))

    # -- the state of the stages: what ran, with which configuration, done or not, and how long ----------
    def _load_state(self) -> dict:
        if not os.path.exists(self.state_path):
            if os.path.isdir(self.out) and os.listdir(self.out):
                raise ExistingFileError(f"OUTPUT_DIR {self.out!r} holds files but no {STATE_FILE}: it is not a "
                                        "pipeline's folder; choose another OUTPUT_DIR")
            return {}
        with open(self.state_path) as f:
            return json.load(f)

    def _save_state(self) -> None:
        os.makedirs(self.out, exist_ok=True)
        with open(self.state_path + ".tmp", "w") as f:
            json.dump(self.state, f, indent=2)
        os.replace(self.state_path + ".tmp", self.state_path)

    def fingerprint(self, *keys: str) -> str:
        """The configuration a stage's outputs depend on (launchers and GPU counts do not change them)."""
        parts = {key: self.cfg[key] for key in keys}
        if "DETECTION" in parts:
            parts["DETECTION"] = {k: v for k, v in parts["DETECTION"].items() if k not in ("DNS", "INITS", "NUM_GPUS")}
        return json.dumps(parts, sort_keys=True, default=str)

    def fingerprints(self) -> dict[str, str]:
        """Every stage's (and detection run's) fingerprint, by its name in the state."""
        pretrained = self.fingerprint("DEMO_DATA", "PRETRAIN")
        found = {"pretrain": pretrained, "knn": self.fingerprint("DEMO_DATA", "PRETRAIN", "KNN"), "convert": pretrained}
        for init, dn in self.detection_runs():
            found[f"detection/{init}_{dn}"] = self.fingerprint("DEMO_DATA", "PRETRAIN", "DETECTION")
        runs = json.dumps(sorted(self.detection_runs().values()))
        found["ap_table"] = self.fingerprint("DETECTION") + runs
        found["pictures"] = self.fingerprint("DETECTION", "PICTURES") + runs
        return found

    def check_state(self) -> None:
        """Refuse an OUTPUT_DIR whose finished or started stages ran with another configuration, before
        anything is written; the cheap stages (table, pictures) are just redone."""
        for name, fingerprint in self.fingerprints().items():
            entry = self.state.get(name)
            if entry is not None and entry["fingerprint"] != fingerprint:
                if name not in CHEAP_STAGES:
                    raise ExistingFileError(f"{self.out} holds stage {name!r} of another configuration (its command "
                                            f"is in {STATE_FILE}); use a new OUTPUT_DIR, or delete it to start again")
                del self.state[name]

    def execute(self, name: str, commands: list[list[str]], outputs: list[str]) -> str:
        """Run ``commands`` unless stage ``name`` is done with its outputs there; returns its status."""
        entry = self.state.get(name)
        if entry is not None and entry.get("done") and all(os.path.exists(p) for p in outputs):
            return "done before, skipped"
        entry = self.state.setdefault(name, {"fingerprint": self.fingerprints()[name], "attempts": 0})
        entry.pop("interrupted", None)
        entry.update(attempts=entry["attempts"] + 1, done=False, commands=[shlex.join(c) for c in commands])
        self._save_state()
        start = time.perf_counter()
        for command in commands:
            print(f"$ {shlex.join(command)}", flush=True)
            child = ForwardedChild(command)
            status = child.run()
            if child.orphans_ended:
                print(f"stage {name}: ended {child.orphans_ended} process(es) its command left running", flush=True)
            if child.signalled or status == EXIT_PREEMPTED:
                entry["interrupted"] = child.signalled or f"exit status {status}"
                self._save_state()
                raise StageInterrupted(name, entry["interrupted"], status)
            if status != 0:
                raise StageFailed(f"stage {name} failed (exit status {status}) running: {shlex.join(command)}. "
                                  "Fix the cause and run the pipeline again: it resumes this stage")
        entry.update(done=True, seconds=round(time.perf_counter() - start, 1), finished=time.strftime("%Y-%m-%d %H:%M:%S"))
        self._save_state()
        return "ran" + (" (resumed after an interruption)" if entry["attempts"] > 1 else "")

    # -- the stages ------------------------------------------------------------------------------------
    def python(self, launcher: str) -> list[str]:
        return shlex.split(launcher) if launcher else [sys.executable]

    def final_checkpoint(self) -> str:
        path = latest_checkpoint(self.paths["pretrain"])
        if path is None:
            raise MissingFileError(f"no pretraining checkpoint in {self.paths['pretrain']}")
        return path

    def stage_pretrain(self) -> str:
        if self.cfg.DEMO_DATA:
            from dspnet_d2.demo.make_demo_data import make_demo_dataset

            make_demo_dataset(self.cfg.DEMO_DATA)  # returns at once when it is there
        command = self.python(self.cfg.PRETRAIN.LAUNCHER) + [
            "-m", "pretrain", "--config-file", self.cfg.PRETRAIN.CONFIG_FILE, *strings(self.cfg.PRETRAIN.OPTS),
            "OUTPUT_DIR", self.paths["pretrain"]]
        export = [os.path.join(self.paths["pretrain"], "export", f"{dn}.pth") for dn in self.dns]
        return self.execute("pretrain", [command], export * bool(self.pretrain_cfg.EXPORT))

    def stage_knn(self) -> str:
        command = self.python(self.cfg.KNN.LAUNCHER) + [
            "-m", "pretrain.eval", "--config-file", self.cfg.KNN.CONFIG_FILE, "PRETRAINED", self.final_checkpoint(),
            "DNS", "all", *strings(self.cfg.KNN.OPTS), "OUTPUT_DIR", self.paths["knn"]]
        return self.execute("knn", [command], [os.path.join(self.paths["knn"], "results.md")])

    def stage_convert(self) -> str:
        command = [sys.executable, "-m", "dspnet_d2.deploy.convert_to_d2", self.final_checkpoint(), "--supernet",
                   "-o", self.paths["pkl"]]
        return self.execute("convert", [command], [self.paths["pkl"]])

    def detection_runs(self) -> dict[tuple[str, str], str]:
        """{(init, dn): run directory}, DN by DN."""
        return {(init, dn): os.path.join(self.out, "detection", f"{init}_{dn}")
                for dn in self.detection_dns for init in self.cfg.DETECTION.INITS}

    def stage_detection(self) -> str:
        from tqdm import tqdm

        statuses = []
        runs = self.detection_runs()
        for (init, dn), run_dir in tqdm(runs.items(), desc="Mask R-CNN runs", unit="run", file=sys.stdout):
            print(f"\n--- Mask R-CNN {dn}, {SERIES[init]} ---", flush=True)
            command = [sys.executable, "-m", "dspnet_d2.d2.train_net", "--config-file",
                       self.cfg.DETECTION.CONFIG_FILE, "--resume", "--num-gpus", str(self.cfg.DETECTION.NUM_GPUS),
                       "--demo-root", self.cfg.DETECTION.DEMO_ROOT, *strings(self.cfg.DETECTION.OPTS),
                       "MODEL.DSPNET.DN", dn, "MODEL.WEIGHTS", self.paths["pkl"] if init == "dspnet" else "",
                       "OUTPUT_DIR", run_dir]
            statuses.append(self.execute(f"detection/{init}_{dn}", [command], [os.path.join(run_dir, "final_results.json")]))
        ran = sum(s.startswith("ran") for s in statuses)
        return f"ran {ran} of {len(runs)} runs" if ran else "done before, skipped"

    def stage_ap_table(self) -> str:
        command = [sys.executable, "-m", "dspnet_d2.detection_report",
                   *[f"{SERIES[init]}={d}" for (init, _), d in self.detection_runs().items()], "-o", self.paths["ap_table"]]
        return self.execute("ap_table", [command], [os.path.join(self.paths["ap_table"], "detection.md")])

    def stage_pictures(self) -> str:
        if self.cfg.PICTURES.NUM_IMAGES == 0:
            return "skipped: PICTURES.NUM_IMAGES is 0"
        commands = []
        for dn in self.detection_dns:
            runs = [f"{SERIES[init]}={d}" for (init, d_dn), d in self.detection_runs().items() if d_dn == dn]
            commands.append([sys.executable, "-m", "dspnet_d2.d2.draw_predictions", *runs, "--dataset",
                             self.cfg.PICTURES.DATASET, "--demo-root", self.cfg.DETECTION.DEMO_ROOT, "-n",
                             str(self.cfg.PICTURES.NUM_IMAGES), "--score-threshold", str(self.cfg.PICTURES.SCORE_THRESHOLD),
                             "-o", self.picture(dn)])
        return self.execute("pictures", commands, [self.picture(dn) for dn in self.detection_dns])

    def picture(self, dn: str) -> str:
        return os.path.join(self.paths["pictures"], f"{dn}.png")

    # -- the run -----------------------------------------------------------------------------------------
    def run(self) -> int:
        """Every stage in order: 0, or ``EXIT_PREEMPTED`` when a signal interrupted a stage (or came between two)."""
        self.check_state()
        os.makedirs(self.out, exist_ok=True)
        with open(os.path.join(self.out, "config.yaml"), "w") as f:
            f.write(self.cfg.dump())
        no_d2 = detectron2_missing()
        needs = {"detection": no_d2, "ap_table": no_d2, "pictures": no_d2}
        with StopSignals(FORWARDED_SIGNALS) as between_stages:
            for number, name in enumerate(STAGES, 1):
                if between_stages.requested:
                    self.summary[name] = f"not started: {between_stages.requested} came before it"
                    print_summary(self)
                    return EXIT_PREEMPTED
                banner(number, name)
                start = time.perf_counter()
                try:
                    status = self.run_stage(name, needs)
                except StageInterrupted as stop:
                    self.summary[name] = str(stop)
                    print_summary(self)
                    return EXIT_PREEMPTED
                self.summary[name] = status
                print(f"[{number}/{len(STAGES)}] {name}: {status} ({time.perf_counter() - start:.0f} s)", flush=True)
        write_report(self)  # again, with the report stage's own status in it
        print_summary(self)
        return 0

    def run_stage(self, name: str, needs: dict) -> str:
        if needs.get(name):
            return f"skipped: {needs[name]}"
        if name == "report":
            write_report(self)
            return "written"
        return getattr(self, f"stage_{name}")()


class StageFailed(UserError):
    """A stage's command ended with an error; it has printed its own message above."""


class StageInterrupted(Exception):
    """A signal reached the pipeline (passed on to the stage) or the stage exited with EXIT_PREEMPTED."""

    def __init__(self, name: str, cause: str, status: int):
        super().__init__(f"interrupted by {cause} (the stage exited with status {status}); run the same command "
                         f"again to resume it")


def banner(number: int, name: str) -> None:
    line = "=" * 100
    print(f"\n{line}\n[stage {number}/{len(STAGES)}] {name}: {STAGES[name]}"
          f"\n{line}", flush=True)
