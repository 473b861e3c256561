"""README.md and docs/*.md name only what exists: repository files, links and their anchors, the modules
and scripts their commands run, every flag against that command's parser, every ``KEY VALUE`` override
against the config the command loads; and .ci/run runs what README says."""
import argparse
import functools
import importlib
import importlib.util
import io
import itertools
import re
import runpy
import shlex
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md"))
PAGE_IDS = [str(p.relative_to(ROOT)) for p in PAGES]

CODE = re.compile(r"```.*?```|`[^`\n]+`", re.S)
# a path under a folder of the repository; run-time folders (output/, datasets/, export/) are not among them
REPO_PATH = re.compile(r"(?<![\w./{},<>*-])(?:\.ci|configs|docs|dspnet_d2|pretrain|tests|tools)/[\w.,{}<>*/-]*")
# a bare recipe name, as in the recipe and protocol tables; looked up under configs/
CONFIG_NAME = re.compile(r"(?<![\w./{},<>*-])[\w.{},<>*-]+\.yaml\b")
PLACEHOLDER = re.compile(r"<[^>]*>|X{4,}|\*|\.\.\.")
RUN_TIME = {"config.yaml"}  # written into OUTPUT_DIR by every run


def expand_braces(path: str) -> list[str]:
    """``semisup_{1,10}pct.yaml`` -> both names, as the shell expands them."""
    parts = re.split(r"\{([^{}]*,[^{}]*)\}", path)
    choices = [part.split(",") if i % 2 else [part] for i, part in enumerate(parts)]
    return ["".join(combo) for combo in itertools.product(*choices)]


def missing_paths(markdown: str) -> list[str]:
    code = " ".join(CODE.findall(markdown))
    missing = []
    for pattern, found in ((REPO_PATH, lambda p: (ROOT / p).exists()),
                           (CONFIG_NAME, lambda p: any((ROOT / "configs").rglob(p)))):
        for match in pattern.findall(code):
            if PLACEHOLDER.search(match) or match in RUN_TIME:
                continue
            missing += [p for p in expand_braces(match.rstrip(".,")) if not found(p)]
    return sorted(set(missing))


@pytest.mark.parametrize("page", PAGES, ids=PAGE_IDS)
def test_pages_name_only_existing_files(page):
    assert missing_paths(page.read_text()) == []


def test_a_wrong_name_is_reported():
    wrong = "configs/detection/mask_rcnn_resnet18_FPN_2x_syncbn.yaml"
    text = f"```bash\npython tools/train_net.py --config-file {wrong} --num-gpus 8\n```\nsee `no_such_recipe.yaml`"
    assert missing_paths(text) == [wrong, "no_such_recipe.yaml"]
    both = "`configs/eval/semisup_linear_{1,10}pct.yaml` and `configs/eval/semisup_linear_{1,5}pct.yaml`"
    assert missing_paths(both) == ["configs/eval/semisup_linear_5pct.yaml"]


# --- links -------------------------------------------------------------------------------------------

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*$", re.M)


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    return {slug(h) for h in HEADING.findall(re.sub(r"```.*?```", "", page.read_text(), flags=re.S))}


def broken_links(page: Path) -> list[str]:
    text = re.sub(r"```.*?```|`[^`\n]+`", "", page.read_text(), flags=re.S)
    broken = []
    for target in LINK.findall(text):
        if re.match(r"[a-z]+://|mailto:", target):
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(target)
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(target)
    return broken


@pytest.mark.parametrize("page", PAGES, ids=PAGE_IDS)
def test_links_and_anchors_resolve(page):
    assert broken_links(page) == []


def test_a_broken_link_is_reported(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# A page\n\n## Run times\n\n[ok](#run-times) [gone](#no-such) [file](missing.md) `[code](x.md)`\n")
    assert broken_links(page) == ["#no-such", "missing.md"]


# --- commands ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Command:
    target: str  # a module (python -m X, torchrun -m X) or a script path (python tools/x.py)
    is_module: bool
    args: tuple[str, ...]
    text: str


FENCE = re.compile(r"```(\w*)\n(.*?)```", re.S)  # every fenced block, in order; its language
INLINE = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")
SEPARATOR = re.compile(r"\s(?:&&|\|\||\||;)\s")


def shell_lines(markdown: str) -> list[str]:
    """The command lines of shell code blocks (continuations joined, comments dropped) and the inline code
    spans that are commands."""
    lines = []
    for block in (text for lang, text in FENCE.findall(markdown) if lang in ('', 'bash', 'sh', 'shell')):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"(^|\s)#.*$", "", line).strip()
            if line:
                lines.append(line)
    stripped = re.sub(r"```.*?```", "", markdown, flags=re.S)
    lines += [span for span in INLINE.findall(stripped) if re.match(r"(python3?|torchrun)\s", span)]
    return lines


def split_words(text: str) -> list[str]:
    try:
        return shlex.split(text)
    except ValueError:  # an unbalanced quote in a synopsis
        return text.split()


def commands(markdown: str) -> list[Command]:
    """Every ``python -m MODULE``, ``python SCRIPT.py`` and ``torchrun ... -m MODULE`` with its arguments (up
    to ``--``, which hands the rest to another command, as tools/submit.py takes it)."""
    found = []
    for line in shell_lines(markdown):
        for segment in SEPARATOR.split(line):
            words = split_words(segment)
            for i, word in enumerate(words):
                start = None
                if word in ("python", "python3") and i + 1 < len(words):
                    if words[i + 1] == "-m" and i + 2 < len(words):
                        target, is_module, start = words[i + 2], True, i + 3
                    elif words[i + 1].endswith(".py"):
                        target, is_module, start = words[i + 1], False, i + 2
                elif word.endswith("torchrun") and "-m" in words[i + 1:]:
                    m = words.index("-m", i + 1)
                    if m + 1 < len(words):
                        target, is_module, start = words[m + 1], True, m + 2
                if start is None or PLACEHOLDER.search(target):  # `python -m ...`: any command
                    continue
                args = []
                for arg in words[start:]:
                    if arg == "--" or arg in ("python", "python3") or arg.endswith("torchrun"):
                        break
                    args.append(arg)
                found.append(Command(target, is_module, tuple(args), segment))
    return found


COMMAND_START = re.compile(r"(?<![`\w/(])(python3? (?:-m \S+|\S+\.py)|torchrun\s.*-m \S+|tools/[\w/]+\.py\s[^()]*\s-)")


def as_shell_block(lines: list[str]) -> str:
    """The commands among ``lines`` (a config file's comments, a --help text) as one shell block: a line from
    where a command starts (``tools/x.py`` given a ``python``), with its ``\\`` continuations."""
    found, continuing = [], False
    for line in lines:
        text = line.strip()
        if continuing:
            found[-1] += " " + text.rstrip("\\").strip()
        elif match := COMMAND_START.search(text):
            start = text[match.start():]
            found.append(("python " if start.startswith("tools/") else "") + start.rstrip("\\").strip())
        else:
            continue
        continuing = text.endswith("\\")
    return "```bash\n" + "\n".join(found) + "\n```\n"


def config_headers() -> list[tuple[str, str]]:
    """Each config file's leading comments, as a shell block of the commands they give."""
    found = []
    for path in sorted((ROOT / "configs").rglob("*.yaml")):
        header = []
        for line in path.read_text().splitlines():
            if not line.startswith("#"):
                break
            header.append(line.lstrip("#"))
        found.append((str(path.relative_to(ROOT)), as_shell_block(header)))
    return found


def help_texts() -> list[tuple[str, str]]:
    """Each command's --help (tools/*.py), as a shell block of the commands it gives."""
    found = []
    for script in sorted((ROOT / "tools").glob("*.py")):
        parser = parser_of(str(script.relative_to(ROOT)), False)
        if parser not in (None, NEEDS_DETECTRON2):
            found.append((f"{script.relative_to(ROOT)} --help", as_shell_block(parser.format_help().splitlines())))
    return found


@functools.lru_cache(maxsize=None)
def all_commands() -> tuple[tuple[str, Command], ...]:
    """Every command of README and docs/, of the config files' headers and of the commands' --help texts."""
    texts = [(str(page.relative_to(ROOT)), page.read_text()) for page in PAGES] + config_headers() + help_texts()
    return tuple((where, cmd) for where, text in texts for cmd in commands(text))


def test_config_headers_and_help_texts_are_read():
    where = {w for w, _ in all_commands()}
    assert "configs/detection/mask_rcnn_mbv3_w0.5_FPN_2x_syncbn.yaml" in where
    assert "configs/pretrain/byol_mbv3_imagenet.yaml" in where and "tools/detection_sweep.py --help" in where
    header = dict(config_headers())["configs/detection/mask_rcnn_resnet_w1.0_d2222_FPN_2x_syncbn.yaml"]
    assert "python tools/convert_to_d2.py <pretraining ckpt> --dn resnet_w1.0_d2222 --data-root" in header


PROJECT = ("pretrain", "dspnet_d2")


def is_project(cmd: Command) -> bool:
    if cmd.is_module:
        return cmd.target.split(".")[0] in PROJECT
    return cmd.target.startswith("tools/")


def module_exists(name: str) -> bool:
    """``python -m name`` would run: a module, or a package with a ``__main__``."""
    try:
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.submodule_search_locations is not None:
            spec = importlib.util.find_spec(name + ".__main__")
    except ImportError:  # a parent package is missing
        return False
    return spec is not None


def test_every_command_runs_an_existing_module_or_script():
    missing = sorted({f"{page}: {cmd.target}" for page, cmd in all_commands()
                      if not (module_exists(cmd.target) if cmd.is_module else (ROOT / cmd.target).is_file())})
    assert missing == []


class _Parser(BaseException):  # not an Exception: no command's error handling catches it
    def __init__(self, parser):
        super().__init__()
        self.parser = parser


def _capture(self, *args, **kwargs):
    raise _Parser(self)


@functools.lru_cache(maxsize=None)
def parser_of(target: str, is_module: bool) -> "argparse.ArgumentParser | None":
    """The argparse parser a command builds, caught when it parses (run as ``__main__``, in this process)."""
    errors = io.StringIO()
    with mock.patch.object(argparse.ArgumentParser, "parse_args", _capture), \
            mock.patch.object(argparse.ArgumentParser, "parse_known_args", _capture), \
            mock.patch.object(sys, "argv", [target, "--help"]), mock.patch.object(sys, "path", list(sys.path)), \
            mock.patch.object(sys, "stderr", errors), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            if is_module:
                runpy.run_module(target, run_name="__main__", alter_sys=True)
            else:
                script = ROOT / target
                sys.path.insert(0, str(script.parent))  # as python puts a script's folder first
                runpy.run_path(str(script), run_name="__main__")
        except _Parser as caught:
            return caught.parser
        except SystemExit:
            pass
        except ImportError as err:
            if "detectron2" not in str(err):
                raise
            return NEEDS_DETECTRON2
    return NEEDS_DETECTRON2 if "detectron2" in errors.getvalue() and not HAS_D2 else None


class _NeedsDetectron2:
    """What ``parser_of`` gives for a command that needs detectron2 where it is not installed (not checked)."""


NEEDS_DETECTRON2 = _NeedsDetectron2()


FLAG = re.compile(r"^--?[A-Za-z][\w-]*$")
KEY = re.compile(r"^[A-Z][A-Z0-9_]*(?:\.[A-Z][A-Z0-9_]*)*$")
NOT_KEYS = {"KEY", "VALUE"}  # the [KEY VALUE ...] placeholder of a synopsis


def flag_of(word: str) -> str | None:
    word = word.strip("[]").split("=", 1)[0]
    return word if FLAG.match(word) else None


def takes_value(action: argparse.Action) -> bool:
    return action.nargs != 0 and not isinstance(action, (argparse._StoreConstAction, argparse._HelpAction))


def read_command(cmd: Command, parser: argparse.ArgumentParser) -> tuple[list[str], str | None, list[str]]:
    """The command's unknown flags, its config file and its ``KEY`` overrides."""
    unknown, config, keys = [], None, []
    words, i = list(cmd.args), 0
    while i < len(words):
        word, flag = words[i], flag_of(words[i])
        if flag:
            action = parser._option_string_actions.get(flag)
            if action is None:
                unknown.append(flag)
            elif "=" not in word and takes_value(action) and i + 1 < len(words):
                value = words[i + 1]
                if action.nargs != "?" or not (flag_of(value) or KEY.match(value)):
                    if flag == "--config-file":
                        config = value
                    i += 1
        elif config and KEY.match(word) and word not in NOT_KEYS:
            keys.append(word)
            i += 1  # its value
        i += 1
    return unknown, config, keys


def test_every_flag_is_accepted_by_its_command():
    unknown = []
    for page, cmd in all_commands():
        if not is_project(cmd):
            continue
        exists = module_exists(cmd.target) if cmd.is_module else (ROOT / cmd.target).is_file()
        if not exists:
            continue  # reported by the test above
        parser = parser_of(cmd.target, cmd.is_module)
        if parser is NEEDS_DETECTRON2:
            continue
        if parser is None:
            unknown.append(f"{page}: {cmd.target} ends before it parses its arguments")
        else:
            unknown += [f"{page}: {cmd.target} {flag}" for flag in read_command(cmd, parser)[0]]
    assert unknown == []


# --- configs -----------------------------------------------------------------------------------------

# the project's loader of each command's config: module, function, arguments after the file. The evaluation
# loader insists on something to evaluate; any existing file will do for reading the keys
PRETRAIN_CFG = ("pretrain.engine.config", "load_cfg")
EVAL_CFG = ("pretrain.eval.config", "load_eval_cfg", ["PRETRAINED", __file__])
SUPERVISED_CFG = ("pretrain.supervised.config", "load_supervised_cfg")
PIPELINE_CFG = ("pretrain.pipeline.config", "load_pipeline_cfg", [])
DETECTRON2_CFG = ("dspnet_d2.d2.train", "load_config")
LOADERS = {
    "pretrain": PRETRAIN_CFG, "pretrain.eval": EVAL_CFG, "pretrain.supervised": SUPERVISED_CFG,
    "pretrain.pipeline": PIPELINE_CFG, "tools/pipeline.py": PIPELINE_CFG,
    "tools/train_net.py": DETECTRON2_CFG, "dspnet_d2.d2.train_net": DETECTRON2_CFG,
    "tools/export_d2.py": DETECTRON2_CFG, "dspnet_d2.d2.export_d2": DETECTRON2_CFG,
}
HAS_D2 = importlib.util.find_spec("detectron2") is not None


@functools.lru_cache(maxsize=None)
def load(target: str, config: str):
    module, function, *extra = LOADERS[target]
    return getattr(importlib.import_module(module), function)(str(ROOT / config), *extra)


def has_key(cfg, key: str) -> bool:
    node = cfg
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def wrong_keys(cmd: Command) -> list[str]:
    parser = parser_of(cmd.target, cmd.is_module)
    if parser is None or parser is NEEDS_DETECTRON2:
        return []
    _, config, keys = read_command(cmd, parser)
    if not keys or not config or PLACEHOLDER.search(config) or not (ROOT / config).is_file():
        return []  # no overrides, or a placeholder (a real file that is missing fails the path test)
    if cmd.target not in LOADERS:
        return [f"{cmd.target}: no config loader known to this test"]
    if LOADERS[cmd.target] is DETECTRON2_CFG and not HAS_D2:
        return []
    cfg = load(cmd.target, config)
    return [f"{cmd.target} {config}: {key}" for key in keys if not has_key(cfg, key)]


def test_every_override_is_a_key_of_the_loaded_config():
    wrong = []
    for page, cmd in all_commands():
        exists = module_exists(cmd.target) if cmd.is_module else (ROOT / cmd.target).is_file()
        if is_project(cmd) and exists:
            wrong += [f"{page}: {w}" for w in wrong_keys(cmd)]
    assert wrong == []


DOTTED_KEY = re.compile(r"^([A-Z][A-Z0-9_]*(?:\.[A-Z][A-Z0-9_]*)+)(?:\s|$)")


def test_every_key_named_in_the_text_exists():
    """``MODEL.NUM_SUBNETS 3|5`` and the like in the prose: a key of some config of the package."""
    configs = [load("pretrain", "configs/pretrain/demo.yaml"), load("pretrain.eval", "configs/eval/demo_knn.yaml"),
               load("pretrain.supervised", "configs/supervised/demo.yaml"),
               load("pretrain.pipeline", "configs/pipeline/demo.yaml")]
    if HAS_D2:
        configs.append(load("tools/train_net.py", "configs/detection/mask_rcnn_demo.yaml"))
    missing = []
    for page in PAGES:
        text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
        for span in INLINE.findall(text):
            match = DOTTED_KEY.match(span)
            if match and not any(has_key(cfg, match.group(1)) for cfg in configs):
                if HAS_D2 or not match.group(1).startswith(("MODEL.", "SOLVER.", "INPUT.", "DATASETS.", "TEST.",
                                                            "DATALOADER.")):
                    missing.append(f"{page.relative_to(ROOT)}: {match.group(1)}")
    assert missing == []


def test_a_wrong_flag_or_key_is_reported():
    text = ("```bash\npython tools/export_dn.py x.pth --formt onnx -o y.onnx && "
            "python -m pretrain --config-file configs/pretrain/demo.yaml [KEY VALUE ...] SOLVER.EPOCH 3 DATA.ROOT d\n"
            "python tools/submit.py --nodes 2 -- \\\n"
            "    python -m pretrain --config-file configs/pretrain/demo.yaml --nodes 1\n```")
    found = commands(text)
    assert [(c.target, c.is_module) for c in found] == [("tools/export_dn.py", False), ("pretrain", True),
                                                         ("tools/submit.py", False), ("pretrain", True)]
    assert read_command(found[0], parser_of("tools/export_dn.py", False))[0] == ["--formt"]
    assert wrong_keys(found[1]) == ["pretrain configs/pretrain/demo.yaml: SOLVER.EPOCH"]
    assert read_command(found[2], parser_of("tools/submit.py", False))[0] == []
    assert read_command(found[3], parser_of("pretrain", True))[0] == ["--nodes"]


# --- CI ----------------------------------------------------------------------------------------------

def test_ci_runs_what_readme_says():
    """.ci/run installs and tests with README's own commands; the README sections and pages it names exist."""
    readme, ci = (ROOT / "README.md").read_text(), (ROOT / ".ci" / "run").read_text()
    run = [re.split(r"\s+(?:\d?>|\|)", line.strip())[0] for line in ci.splitlines()
           if re.match(r"\s*(pip install|python -m pytest)", line)]
    assert run and [line for line in run if line not in readme] == []
    headings = {h.strip() for h in HEADING.findall(readme)}
    assert [s for s in re.findall(r'README, "([^"]+)"', ci) if s not in headings] == []
    assert [p for p in re.findall(r"docs/[\w.-]+\.md", ci) if not (ROOT / p).is_file()] == []


# what a measurement looks like: a run time, "~N" or "about N" of something, a decimal ratio, "reach N%"
FIGURE = re.compile(r"\b\d+(?:\.\d+)?\s?(?:min|minutes|hours?)\b|(?:~|about\s)\d+(?:\.\d+)?\s?(?:x|%|points?)"
                    r"|\b\d+\.\d+x\b|\breach(?:es)?\s\d+%")


def test_every_measured_figure_in_a_config_file_points_to_results():
    """A run time, ratio or percentage in a config file's comments is RESULTS' figure: the file names the page."""
    unsourced = []
    for path in sorted((ROOT / "configs").rglob("*.yaml")):
        header = [line[line.index("#"):] for line in path.read_text().splitlines() if "#" in line]
        # a recipe's own settings (the paper's, timm's) are not measurements
        figures = [f for line in header if not re.search(r"timm|paper|A\.\d|--", line) for f in FIGURE.findall(line)]
        if figures and not any("RESULTS" in line for line in header):
            unsourced.append(f"{path.relative_to(ROOT)}: {figures}")
    assert unsourced == []
