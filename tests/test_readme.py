"""Every repository file README.md names (in code blocks and inline code) exists."""
import itertools
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

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


def test_readme_names_only_existing_files():
    assert missing_paths((ROOT / "README.md").read_text()) == []


def test_a_wrong_name_is_reported():
    wrong = "configs/detection/mask_rcnn_resnet18_FPN_2x_syncbn.yaml"
    text = f"```bash\npython tools/train_net.py --config-file {wrong} --num-gpus 8\n```\nsee `no_such_recipe.yaml`"
    assert missing_paths(text) == [wrong, "no_such_recipe.yaml"]
    both = "`configs/eval/semisup_linear_{1,10}pct.yaml` and `configs/eval/semisup_linear_{1,5}pct.yaml`"
    assert missing_paths(both) == ["configs/eval/semisup_linear_5pct.yaml"]
