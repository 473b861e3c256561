"""Slimmable supervised training (Appendix B): losses, sandwich order, starting weights, resume, DDP, command."""
import json
import math

import pytest
import torch
import torch.nn.functional as F
from torchvision.models import mobilenet_v3_large

from dspnet_d2 import DN_SETS, InvalidInputError, MissingFileError, build_supernet, dn_set, parse_dn, slice_dn
from dspnet_d2.weights import PRETRAIN_FORMAT, save_dn_file
from pretrain.methods import sample_subnets
from pretrain.supervised.__main__ import main as supervised_main
from pretrain.supervised.config import load_supervised_cfg
from pretrain.supervised.method import distillation_loss, load_init, sandwich_order, train_subnets
from pretrain.supervised.trainer import SupervisedTrainer
from pretrain_utils import one_process, tiny_data, torchrun

S3 = DN_SETS["mbv3_s3"]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return tiny_data(tmp_path_factory.mktemp("demo"))


def tiny_args(data_root, output_dir, *overrides):
    """mbv3_s3 at 32 px, batch 16 of the tiny data (64 images): 4 steps per epoch."""
    return ["DATA.ROOT", str(data_root), "OUTPUT_DIR", str(output_dir), "DATA.NUM_WORKERS", "0", "MODEL.DNS",
            "mbv3_s3", "MODEL.NUM_SUBNETS", "3", "SOLVER.BATCH_SIZE", "16", "SOLVER.EPOCHS", "2",
            "CHECKPOINT.PERIOD", "1", "CHECKPOINT.KEEP", "20", "LOG_PERIOD", "1", "EVAL_PERIOD", "0",
            "BN_RECALIBRATION.BATCHES", "2", "EVAL_BATCH_SIZE", "16", *overrides]


def tiny_cfg(data_root, output_dir, *overrides):
    return load_supervised_cfg("configs/supervised/demo.yaml", tiny_args(data_root, output_dir, *overrides))


def test_distillation_loss_is_the_soft_cross_entropy():
    student = torch.tensor([[1.0, 0.0, -1.0], [0.5, 2.0, 0.0]])
    teacher = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    by_hand = 0.0
    for logits, probs in zip(student.tolist(), teacher.tolist()):
        log_z = math.log(sum(math.exp(v) for v in logits))
        by_hand -= sum(p * (v - log_z) for p, v in zip(probs, logits))
    assert distillation_loss(student, teacher).item() == pytest.approx(by_hand / 2, rel=1e-6)


def test_sandwich_order_puts_the_largest_first():
    for step in range(5):
        order = sandwich_order(DN_SETS["mbv3_s5"], 4, step, seed=3)
        drawn = sample_subnets(DN_SETS["mbv3_s5"], 4, step, 3, False)
        assert order[0] == parse_dn("mbv3_w1.0") and order[1] == parse_dn("mbv3_w0.5")
        assert sorted(order) == sorted(drawn)


def test_only_the_largest_learns_from_the_labels():
    torch.manual_seed(0)
    model = build_supernet(DN_SETS["mbv3_s3"], num_classes=5)
    model.classifier[2].p = 0.0  # no dropout: the reference forwards below see the same network
    images, labels = torch.randn(6, 3, 32, 32), torch.tensor([0, 1, 2, 3, 4, 0])
    order = sandwich_order(S3, 3, 0, 0)
    rows = train_subnets(model, order, images, labels, 0.1, backward=lambda loss: None)
    model.set_active(order[0])
    full = model(images)
    assert rows[0, 0].item() == pytest.approx(F.cross_entropy(full, labels, label_smoothing=0.1).item(), rel=1e-5)
    for dn, row in zip(order[1:], rows[1:]):
        model.set_active(dn)
        expected = distillation_loss(model(images), F.softmax(full.detach(), 1))
        assert row[0].item() == pytest.approx(expected.item(), rel=1e-5)
    # other labels change the largest network's loss only
    other = train_subnets(model, order, images, (labels + 1) % 5, 0.1, backward=lambda loss: None)
    assert other[0, 0] != rows[0, 0] and torch.allclose(other[1:, 0], rows[1:, 0])


def test_gradients_of_all_subnetworks_add_up():
    torch.manual_seed(0)
    model = build_supernet(DN_SETS["mbv3_s3"], num_classes=5)
    model.classifier[2].p = 0.0
    images, labels = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    order = sandwich_order(S3, 3, 0, 0)
    train_subnets(model, order, images, labels, 0.0)
    summed = model.features[0][0].weight.grad.clone()
    total = torch.zeros_like(summed)
    teacher = None
    for dn in order:  # each sub-network alone, its gradient added by hand
        model.zero_grad()
        model.set_active(dn)
        logits = model(images)
        if teacher is None:
            loss, teacher = F.cross_entropy(logits, labels), F.softmax(logits.detach(), 1)
        else:
            loss = distillation_loss(logits, teacher)
        loss.backward()
        total += model.features[0][0].weight.grad
    assert torch.allclose(summed, total, atol=1e-6)


def _pretraining_file(path, supernet, dns):
    online = {f"encoder.{k}": v for k, v in supernet.state_dict().items()}
    torch.save({"format": PRETRAIN_FORMAT, "signature": {"dns": [str(d) for d in dns]}, "online": online}, path)


def test_init_from_dspnet_byol_or_random(tmp_path):
    torch.manual_seed(1)
    source = build_supernet(DN_SETS["mbv3_s3"])
    _pretraining_file(tmp_path / "dspnet.pth", source, S3)
    model = build_supernet(DN_SETS["mbv3_s3"], num_classes=7)
    head = model.classifier[0].weight.clone()
    assert load_init(model, str(tmp_path / "dspnet.pth")) == "DSPNet init"
    for key, value in source.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    assert torch.equal(model.classifier[0].weight, head)  # the classifier starts fresh
    # BYOL+S-Net: a single network must be the full width
    full, half = parse_dn("mbv3_w1.0"), parse_dn("mbv3_w0.5")
    save_dn_file(str(tmp_path / "full.pth"), full, slice_dn(source, full).state_dict())
    assert load_init(build_supernet(DN_SETS["mbv3_s3"], num_classes=7), str(tmp_path / "full.pth")) == "BYOL init"
    save_dn_file(str(tmp_path / "half.pth"), half, slice_dn(source, half).state_dict())
    with pytest.raises(InvalidInputError, match="full network mbv3_w1.0"):
        load_init(build_supernet(DN_SETS["mbv3_s3"], num_classes=7), str(tmp_path / "half.pth"))
    with pytest.raises(InvalidInputError, match="does not contain"):
        load_init(build_supernet(DN_SETS["resnet_s9"], num_classes=7), str(tmp_path / "dspnet.pth"))
    assert load_init(model, "none") == "random init"


def test_bad_input_is_refused(data_root, tmp_path):
    with pytest.raises(MissingFileError, match="INIT"):
        supervised_main(["--config-file", "configs/supervised/demo.yaml", "INIT", str(tmp_path / "nope.pth")])
    with pytest.raises(InvalidInputError, match="do not apply to the resnet family"):
        tiny_cfg(data_root, tmp_path, "MODEL.DNS", "resnet_s9", "MODEL.DROP_PATH", "0.2")
    with pytest.raises(InvalidInputError, match="NUM_SUBNETS"):
        tiny_cfg(data_root, tmp_path, "MODEL.DNS", "mbv3_w1.0", "MODEL.NUM_SUBNETS", "3")


def test_killed_run_resumes_to_the_same_weights(data_root, tmp_path):
    overrides = ("MODEL.EMA_DECAY", "0.9", "EXPORT", "False")  # the EMA is resumed too
    straight = SupervisedTrainer(tiny_cfg(data_root, tmp_path / "straight", *overrides))
    straight.train()
    first = SupervisedTrainer(tiny_cfg(data_root, tmp_path / "killed", *overrides))
    assert first.train(stop_after=3) == 3
    resumed = SupervisedTrainer(tiny_cfg(data_root, tmp_path / "killed", *overrides))
    assert resumed.train() == straight.total_steps == 8
    for a, b in ((straight.model, resumed.model), (straight.ema.module, resumed.ema.module)):
        for (key, x), y in zip(a.state_dict().items(), b.state_dict().values()):
            assert torch.equal(x, y), key
    results = json.loads((tmp_path / "killed" / "results.json").read_text())["results"]
    assert results == json.loads((tmp_path / "straight" / "results.json").read_text())["results"]


def test_two_processes_equal_one(data_root, tmp_path):
    def args(run):
        # synced BN and no dropout: the two runs compute the same function of the same batches; SGD, as
        # RMSprop's first steps (g / sqrt(0.1 g^2)) blow float32 reduction-order differences up to 1e-4
        return ["--config-file", "configs/supervised/demo.yaml", *tiny_args(data_root, tmp_path / run),
                "MODEL.SYNC_BN", "True", "SOLVER.EPOCHS", "1", "EXPORT", "False", "BN_RECALIBRATION.BATCHES", "0",
                "SOLVER.OPTIMIZER", "sgd", "SOLVER.BASE_LR", "0.1"]

    one_process(supervised_main, args("one"))
    torchrun(2, args("two"), "pretrain.supervised")

    def losses(run):
        lines = (tmp_path / run / "metrics.jsonl").read_text().splitlines()
        return [{k: v for k, v in json.loads(line).items() if k.startswith("loss")} for line in lines
                if '"loss"' in line]

    one, two = losses("one"), losses("two")
    assert len(one) == len(two) == 4
    for a, b in zip(one, two):
        assert a.keys() == b.keys()
        for key in a:
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-5), key
    a = torch.load(tmp_path / "one" / "checkpoint_00000004.pth", weights_only=True)["model"]
    b = torch.load(tmp_path / "two" / "checkpoint_00000004.pth", weights_only=True)["model"]
    for key in a:
        if a[key].is_floating_point():
            assert torch.allclose(a[key], b[key], atol=1e-4, rtol=1e-3), key


def test_command_evaluates_and_exports_every_dn(data_root, tmp_path):
    out = tmp_path / "run"
    assert supervised_main(["--config-file", "configs/supervised/demo.yaml", *tiny_args(data_root, out)]) == 0
    results = json.loads((out / "results.json").read_text())["results"]
    assert [r["dn"] for r in results] == [str(dn) for dn in S3]
    assert all(r["series"] == "random init" and 0 <= r["top1"] <= r["top5"] <= 100 for r in results)
    assert all(r["bn_recalibration"] == {"seed": 0, "images": 32, "resolution": 32} for r in results)
    assert (out / "accuracy.png").read_bytes()[:4] == b"\x89PNG" and (out / "results.md").exists()
    checkpoint = torch.load(out / "checkpoint_00000008.pth", weights_only=True)
    assert checkpoint["dns"] == [str(dn) for dn in S3] and checkpoint["encoder"] == {"entry": "model", "prefix": ""}
    for dn in S3:
        saved = torch.load(out / "export" / f"{dn}.pth", weights_only=True)
        net = mobilenet_v3_large(width_mult=dn.width, num_classes=8)
        net.load_state_dict(saved["state_dict"], strict=True)  # torchvision's model, classifier included
        assert saved["num_classes"] == 8 and len(saved["classes"]) == 8
    # a finished run is not trained or evaluated again
    before = (out / "results.json").stat().st_mtime_ns
    assert supervised_main(["--config-file", "configs/supervised/demo.yaml", *tiny_args(data_root, out)]) == 0
    assert (out / "results.json").stat().st_mtime_ns == before


def _gradient_worker(rank, port, dn_sets, result_path):
    """For each family's DNs, one sandwich step on half the batch per rank (synced BN, float64, the trainer's DDP
    wrapper) against one process on the whole batch: the largest difference of a gradient, by family."""
    import copy
    import os

    import torch.distributed as dist

    from dspnet_d2.slim.ops import configure_norms
    from pretrain.supervised.trainer import wrap_ddp

    torch.set_default_dtype(torch.float64)
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    worst = {}
    for dns in dn_sets:
        torch.manual_seed(0)
        model = build_supernet(dn_set(dns), num_classes=5).train()
        if hasattr(model, "classifier"):
            model.classifier[2].p = 0.0  # no dropout: every run computes the same function
        images, labels = torch.randn(8, 3, 32, 32), torch.randint(0, 5, (8,))
        order = sandwich_order(model_dns := tuple(parse_dn(d) for d in dns), len(model_dns), 0, 0)
        reference = copy.deepcopy(model)
        train_subnets(reference, order, images, labels, 0.1)
        configure_norms(model, sync=True)
        half = slice(rank * 4, rank * 4 + 4)
        train_subnets(model, order, images[half], labels[half], 0.1, wrap_ddp(model, torch.device("cpu")))
        worst[",".join(dns)] = max((p.grad - q.grad).abs().max().item()
                            for p, q in zip(model.parameters(), reference.parameters()))
    if rank == 0:
        with open(result_path, "w") as f:
            json.dump(worst, f)
    dist.destroy_process_group()


def test_two_process_gradients_equal_one_process_in_float64(tmp_path):
    """Both families in one pair of processes (one start of two workers, not one per family)."""
    import random

    import torch.multiprocessing as mp

    dn_sets = [["mbv3_w0.5", "mbv3_w0.75", "mbv3_w1.0"],
               ["resnet_w1.0_d2222", "resnet_w1.0_d2343", "resnet_w1.0_d3463"]]
    result = tmp_path / "worst.json"
    mp.spawn(_gradient_worker, args=(random.randint(20000, 40000), dn_sets, str(result)), nprocs=2)
    worst = json.loads(result.read_text())
    assert list(worst) == [",".join(dns) for dns in dn_sets]
    for dns, difference in worst.items():
        assert difference < 1e-10, dns


def test_compare_runs_merges_series_into_one_table_and_plot(tmp_path, capsys, monkeypatch):
    from pretrain_utils import run_tool

    rows = [{"series": series, "dn": dn, "params": 1e6 * (i + 1), "flops": 1e8 * (i + 1), "top1": top1 + i,
             "top5": 90.0} for series, top1 in (("random init", 40.0), ("DSPNet init", 50.0))
            for i, dn in enumerate(("mbv3_w0.5", "mbv3_w1.0"))]
    for name, part in (("a", rows[:2]), ("b", rows[2:])):
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps({"title": name, "results": part}))
    result = run_tool("compare_runs", [tmp_path / "a", tmp_path / "b", "-o", tmp_path / "fig"], capsys, monkeypatch)
    assert result.code == 0
    merged = json.loads((tmp_path / "fig" / "results.json").read_text())["results"]
    assert [(r["series"], r["dn"]) for r in merged] == [(r["series"], r["dn"]) for r in rows]
    assert "| DSPNet init | mbv3_w1.0 |" in (tmp_path / "fig" / "results.md").read_text()
    assert (tmp_path / "fig" / "accuracy.png").read_bytes()[:4] == b"\x89PNG"
    missing = run_tool("compare_runs", [tmp_path / "nope", "-o", tmp_path / "fig"], capsys, monkeypatch)
    assert missing.code == 2 and "error: " in missing.err and "results.json" in missing.err


def test_recipes_follow_timm_and_torchvision():
    from pretrain.supervised.optim import build_optimizer, supervised_lr_at

    mbv3 = load_supervised_cfg("configs/supervised/slimmable_mbv3_imagenet.yaml")
    # timm: 2 processes x -b 512 at lr 0.064, so 0.064 per 1024 images of the global batch
    assert mbv3.SOLVER.BATCH_SIZE == 1024 and mbv3.SOLVER.BASE_LR / mbv3.SOLVER.BASE_BATCH == 0.064 / 1024
    steps = 1_281_167 // mbv3.SOLVER.BATCH_SIZE
    assert 7.5 < 1 / (1 - mbv3.MODEL.EMA_DECAY) / steps < 8.5  # the EMA spans about 8 epochs, as timm's
    resnet = load_supervised_cfg("configs/supervised/slimmable_resnet_imagenet.yaml")
    lrs = [supervised_lr_at(epoch * 100, 100, resnet) for epoch in (0, 29, 30, 59, 60, 89)]
    assert lrs == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.001, 0.001])  # torchvision's StepLR(30, 0.1)
    model = build_supernet(DN_SETS["resnet_s9"], num_classes=10)
    assert {g["weight_decay"] for g in build_optimizer(resnet, model).param_groups} == {1e-4}  # every parameter
    supernet = build_supernet(DN_SETS["mbv3_s3"], num_classes=10)
    decays = [g["weight_decay"] for g in build_optimizer(mbv3, supernet).param_groups]
    assert decays == [1e-5, 0.0]  # timm: no decay on biases and norms
