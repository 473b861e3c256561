import json
import os

import pytest
import torch

from dspnet_d2.runtime.stopping import Preempted, StopProtocol
from pretrain.data.sampler import ResumableSampler
from pretrain.eval.classifier import Classifier, train_classifier
from pretrain.eval.config import load_eval_cfg
from pretrain.eval.data import train_transform
from pretrain.eval.subsets import draw_balanced, read_list_file, write_list_file
from pretrain.monitor.features import topk_accuracy
from pretrain.monitor.knn import knn_scores


def test_knn_majority_vote_on_hand_made_bank():
    # class 0 around +x, class 1 around +y, class 2 around -x; cosine similarity decides
    bank = torch.tensor([[1, 0.1], [1, -0.1], [0.9, 0], [0.1, 1], [-0.1, 1], [0, 0.8], [-1, 0.05], [-1, -0.05]])
    labels = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2])
    queries = torch.tensor([[2.0, 0.0], [0.0, 3.0], [-1.0, 0.0], [0.7, 0.72]])
    scores = knn_scores(bank, labels, queries, k=3, num_classes=3)
    assert scores.argmax(1).tolist() == [0, 1, 2, 1]
    assert scores[0].tolist() == pytest.approx([3, 0, 0], abs=1e-4)  # three votes of weight ~1
    # k = 5: query 2 sees its 2 class-2 neighbours and 3 others; the majority decides
    scores = knn_scores(bank, labels, torch.tensor([[-1.0, 0.0]]), k=5, num_classes=3)
    assert scores[0].round().tolist() == [0, 3, 2]
    assert scores.argmax(1).tolist() == [1]


def test_knn_temperature_weighting_favours_closer_neighbours():
    bank = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.05, 1.0]])
    labels = torch.tensor([0, 1, 1])
    query = torch.tensor([[1.0, 0.9]])  # slightly closer to class 0 than to each class-1 sample
    assert knn_scores(bank, labels, query, 3, 2).argmax(1).item() == 1  # majority: two votes for class 1
    assert knn_scores(bank, labels, query, 3, 2, temperature=0.01).argmax(1).item() == 0
    with pytest.raises(ValueError, match="k=4"):
        knn_scores(bank, labels, query, 4, 2)


def test_topk_accuracy():
    scores = torch.tensor([[0.1, 0.5, 0.4], [0.8, 0.1, 0.1]])
    acc = topk_accuracy(scores, torch.tensor([2, 0]), ks=(1, 2))
    assert acc == {"top1": 50.0, "top2": 100.0}


class _Points(torch.utils.data.Dataset):
    def __init__(self, n, seed):
        g = torch.Generator().manual_seed(seed)
        self.y = torch.randint(0, 4, (n,), generator=g)
        centers = torch.eye(4, 16) * 3
        self.x = centers[self.y] + 0.3 * torch.randn(n, 16, generator=g)

    def __len__(self):
        return len(self.y)

    def __getitem__(self, item):  # an index, or the (index, seed) of ResumableSampler
        i = item[0] if isinstance(item, tuple) else item
        return self.x[i], self.y[i], i


def _train_loader(points, batch):
    """The evaluation's classifier batches: shuffled per epoch, resumable at any step."""
    sampler = ResumableSampler(len(points), batch, seed=0)
    return torch.utils.data.DataLoader(points, batch_size=sampler.batch, sampler=sampler)


def test_linear_probe_reaches_full_accuracy_on_separable_features(tmp_path):
    cfg = load_eval_cfg(None, ["PROTOCOL", "linear", "PRETRAINED", __file__, "TRAIN.EPOCHS", "15",
                               "TRAIN.BATCH_SIZE", "64", "TRAIN.LR", "0.2"])
    encoder = torch.nn.Linear(16, 16)  # stands in for a frozen DN encoder
    frozen_before = {k: v.clone() for k, v in encoder.state_dict().items()}
    model = Classifier(encoder, 16, 4, head_bn=True, frozen=True)
    train = _train_loader(_Points(512, 0), 64)
    val = torch.utils.data.DataLoader(_Points(256, 1), batch_size=64)
    accuracy = train_classifier(model, train, val, cfg, torch.device("cpu"), str(tmp_path / "state.pth"))
    assert accuracy["top1"] >= 99.0
    for key, value in encoder.state_dict().items():
        assert torch.equal(value, frozen_before[key])  # a frozen encoder stays frozen
    assert torch.load(tmp_path / "state.pth", weights_only=True)["epoch"] == 15


@pytest.mark.parametrize("stop_at", [(2, 0), (1, 3), (3, 3)], ids=["mid_epoch", "epoch_end", "last_step"])
def test_linear_probe_stops_at_a_signal_with_that_step_and_resumes_exactly(tmp_path, stop_at):
    """A stop signal (``stop_at``: epoch, step of it; 4 steps an epoch) writes the state of the step it came in
    and raises Preempted; the rerun continues to exactly the weights of an uninterrupted run."""
    cfg = load_eval_cfg(None, ["PROTOCOL", "linear", "PRETRAINED", __file__, "TRAIN.BATCH_SIZE", "64",
                               "TRAIN.LR", "0.2", "TRAIN.EPOCHS", "4"])
    train = _train_loader(_Points(256, 0), 64)
    val = torch.utils.data.DataLoader(_Points(64, 1), batch_size=64)

    def fresh():
        torch.manual_seed(0)
        return Classifier(torch.nn.Linear(16, 16), 16, 4, head_bn=True, frozen=True)

    class SignalledAt:  # the loader, with a stop signal arriving while it serves step ``stop_at``
        def __init__(self, stops):
            self.stops, self.sampler, self.epoch = stops, train.sampler, -1

        def __iter__(self):
            self.epoch += 1
            for i, batch in enumerate(train, start=train.sampler.start_batch):
                if (self.epoch, i) == stop_at:
                    self.stops.signals.requested = "SIGTERM"
                yield batch

    straight = fresh()
    train_classifier(straight, train, val, cfg, torch.device("cpu"), str(tmp_path / "a.pth"))
    stops = StopProtocol(str(tmp_path), signals=[])
    with pytest.raises(Preempted, match=r"stopped by SIGTERM after probe step"):
        train_classifier(fresh(), SignalledAt(stops), val, cfg, torch.device("cpu"), str(tmp_path / "b.pth"),
                         desc="probe", stops=stops)
    assert json.loads((tmp_path / "stopped.json").read_text())["step"] == stop_at[0] * 4 + stop_at[1] + 1
    state = torch.load(tmp_path / "b.pth", weights_only=True)
    epoch, step = stop_at
    assert (state["epoch"], state["batch"]) == ((epoch, step + 1) if step + 1 < 4 else (epoch + 1, 0))
    resumed = fresh()
    train_classifier(resumed, train, val, cfg, torch.device("cpu"), str(tmp_path / "b.pth"))
    for key, value in straight.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key


def _samples():
    return [(f"/data/c{c}/img_{c}_{i}.JPEG", c) for c in range(3) for i in range(c * 10 + 20)]


def test_balanced_draw_is_per_class_and_seeded():
    samples = _samples()
    picked = draw_balanced(samples, 10, seed=3)
    per_class = [sum(samples[i][1] == c for i in picked) for c in range(3)]
    assert per_class == [2, 3, 4]  # 10% of 20, 30, 40
    assert picked == draw_balanced(samples, 10, seed=3)
    assert picked != draw_balanced(samples, 10, seed=4)
    assert [sum(samples[i][1] == c for i in draw_balanced(samples, 1, 0)) for c in range(3)] == [1, 1, 1]


def test_list_files_round_trip_and_missing_names_fail(tmp_path):
    samples = _samples()
    picked = draw_balanced(samples, 10, seed=0)
    path = str(tmp_path / "subset.txt")
    write_list_file(path, samples, picked)
    assert read_list_file(path, samples) == picked
    with open(path, "a") as f:
        f.write("n0000_missing.JPEG\n")
    with pytest.raises(FileNotFoundError, match="n0000_missing.JPEG"):
        read_list_file(path, samples)


def test_eval_config_errors(tmp_path):
    with pytest.raises(ValueError, match="PRETRAINED"):
        load_eval_cfg("configs/eval/knn.yaml")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_eval_cfg("configs/eval/knn.yaml", ["PRETRAINED", str(tmp_path / "nope.pth")])
    with pytest.raises(ValueError, match="semi-supervised"):
        load_eval_cfg("configs/eval/linear.yaml", ["PRETRAINED", __file__, "PROTOCOL", "semisup_linear"])
    for bad in ("(0.0, 1.0)", "(0.5, 0.4)", "(0.4, 1.2)"):
        with pytest.raises(ValueError, match="CROP_SCALE"):
            load_eval_cfg("configs/eval/linear.yaml", ["PRETRAINED", __file__, "DATA.CROP_SCALE", bad])
    for name in os.listdir("configs/eval"):
        cfg = load_eval_cfg(f"configs/eval/{name}", ["PRETRAINED", __file__])
        assert cfg.PROTOCOL in name or name.startswith("demo_")


def test_train_transform_crops_within_the_configured_scale():
    """DATA.CROP_SCALE reaches RandomResizedCrop: every crop covers the configured area fraction."""
    from PIL import Image

    image = Image.new("RGB", (64, 64))
    crop = train_transform(16, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), (0.5, 0.5)).transforms[0]
    assert crop.scale == (0.5, 0.5)
    torch.manual_seed(0)
    for _ in range(20):
        _, _, h, w = crop.get_params(image, crop.scale, crop.ratio)
        assert abs(h * w / 64 ** 2 - 0.5) < 0.05
    assert train_transform(16, (0.0,) * 3, (1.0,) * 3).transforms[0].scale == (0.08, 1.0)


def test_an_unreadable_image_is_replaced_by_one_of_the_subset_only(tmp_path):
    """The 1% / 10% protocols train on their subset: the replacement of an unreadable image comes from it too."""
    from PIL import Image

    from dspnet_d2.images import ImageFolderIO, SeededLabelledImages

    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        for i in range(3):
            Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(tmp_path / cls / f"{i}.png")
    (tmp_path / "a" / "1.png").write_bytes(b"not an image")
    images = ImageFolderIO(str(tmp_path))
    subset = [images.samples.index((str(tmp_path / "a" / "1.png"), 0)),
              images.samples.index((str(tmp_path / "b" / "2.png"), 1))]
    dataset = SeededLabelledImages(images, lambda image: image, subset)
    image, label, skipped = dataset[(0, 7)]  # the unreadable one: the next of the subset is b/2.png
    assert (label, skipped) == (1, 1) and image.getpixel((0, 0)) == (80, 0, 0)


def test_the_linear_evaluation_rounds_a_batch_the_processes_do_not_divide(tmp_path):
    from dspnet_d2.images import ImageFolderIO
    from pretrain.eval.runner import Evaluation

    from PIL import Image

    for i in range(300):
        (tmp_path / "c").mkdir(exist_ok=True)
        Image.new("RGB", (4, 4)).save(tmp_path / "c" / f"{i}.png")
    evaluation = Evaluation.__new__(Evaluation)  # only what train_loader reads
    evaluation.cfg = load_eval_cfg(None, ["PROTOCOL", "linear", "PRETRAINED", __file__, "TRAIN.BATCH_SIZE", "256"])
    evaluation.train_images, evaluation.subset = ImageFolderIO(str(tmp_path)), None
    evaluation.rank, evaluation.world, evaluation.main, evaluation.device = 1, 3, False, torch.device("cpu")
    loader = evaluation.train_loader(lambda image: image)
    assert loader.batch_size == 85 and loader.sampler.global_batch == 255  # 256 on 3 processes, as before
