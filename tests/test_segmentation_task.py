"""The segmentation task: losses, and metrics from one confusion matrix per split, against
torchmetrics (an independent implementation) on random masks; the reduction across ranks."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from training.config import TrainingConfig
from training.data.splits import TensorSplit
from training.distributed import Dist
from training.evaluation import evaluate_split
from training.tasks import TASKS
from training.tasks.make import MAKERS, make_task
from training.tasks.segmentation import SegmentationTask, default_palette, per_class

IGNORE = 255


def random_batches(classes: int, channels: int, seed: int, batches: int = 3) -> list[tuple[Tensor, Tensor]]:
    """(logits (4, channels, 12, 10), masks (4, 12, 10)) with some ignored pixels; the last class
    never appears in truth, and never in prediction (its logit is very low)."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(batches):
        logits = torch.randn(4, channels, 12, 10, generator=gen)
        masks = torch.randint(0, max(classes - 1, 2), (4, 12, 10), generator=gen)
        masks[torch.rand(4, 12, 10, generator=gen) < 0.1] = IGNORE
        if channels > 2:
            logits[:, -1] = -100.0
        out.append((logits, masks))
    return out


def summed(task: SegmentationTask, batches: list[tuple[Tensor, Tensor]]) -> list[float]:
    total = sum(task.tally(x, y) for x, y in batches)
    assert isinstance(total, Tensor)
    return [float(v) for v in total]


def test_multiclass_metrics_equal_torchmetrics_over_a_split() -> None:
    from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score, MulticlassJaccardIndex

    classes = 5
    task = SegmentationTask(tuple(f"c{i}" for i in range(classes)), IGNORE)
    batches = random_batches(classes, classes, seed=0)
    kwargs = {"num_classes": classes, "ignore_index": IGNORE}
    refs = {"miou": MulticlassJaccardIndex(average="macro", **kwargs),
            "dice": MulticlassF1Score(average="macro", **kwargs),
            "pixel_acc": MulticlassAccuracy(average="micro", **kwargs),
            "iou": MulticlassJaccardIndex(average="none", **kwargs)}
    for logits, masks in batches:
        for ref in refs.values():
            ref.update(logits.argmax(1), masks)
    found = task.summarize(summed(task, batches), 12)
    for name in ("miou", "dice", "pixel_acc"):
        assert found[name] == pytest.approx(float(refs[name].compute()), abs=1e-6), name
    matrix = torch.tensor(summed(task, batches)).view(classes, classes)
    rows = per_class(matrix, task.classes)
    expected = refs["iou"].compute().tolist()
    assert [r["iou"] for r in rows[:-1]] == pytest.approx(expected[:-1], abs=1e-6)
    assert rows[-1]["iou"] is None and rows[-1]["support"] == 0  # absent: left out of the mean, as torchmetrics does
    assert sum(r["support"] for r in rows) == int((torch.cat([m for _, m in batches]) != IGNORE).sum())


def test_binary_metrics_threshold_one_channel_at_zero_like_torchmetrics() -> None:
    from torchmetrics.classification import BinaryJaccardIndex, MulticlassJaccardIndex

    task = SegmentationTask(("background", "foreground"), IGNORE)
    batches = random_batches(2, 1, seed=1)
    fg = BinaryJaccardIndex(ignore_index=IGNORE)  # sigmoid > 0.5 on probabilities
    mean = MulticlassJaccardIndex(num_classes=2, ignore_index=IGNORE, average="macro")
    for logits, masks in batches:
        fg.update(logits[:, 0].sigmoid(), masks)
        mean.update((logits[:, 0] > 0).long(), masks)
    tally = summed(task, batches)
    assert task.summarize(tally, 12)["miou"] == pytest.approx(float(mean.compute()), abs=1e-6)
    rows = per_class(torch.tensor(tally).view(2, 2), task.classes)
    assert rows[1]["iou"] == pytest.approx(float(fg.compute()), abs=1e-6)


def test_cross_entropy_bce_and_dice_losses() -> None:
    gen = torch.Generator().manual_seed(2)
    logits, masks = torch.randn(3, 4, 8, 8, generator=gen), torch.randint(0, 4, (3, 8, 8), generator=gen)
    classes = tuple("abcd")
    ce = SegmentationTask(classes, IGNORE, "ce")
    assert float(ce.loss(logits, masks)) == pytest.approx(float(F.cross_entropy(logits, masks)), rel=1e-6)
    assert float(ce.loss_sum(logits, masks)) == pytest.approx(3 * float(ce.loss(logits, masks)), rel=1e-6)
    one = masks[:1].clone()
    one[0, :3] = IGNORE  # ignored pixels count for nothing
    assert float(ce.loss(logits[:1], one)) == pytest.approx(
        float(F.cross_entropy(logits[:1], one, ignore_index=IGNORE)), rel=1e-6)

    binary = SegmentationTask(("background", "foreground"), IGNORE, "ce")
    fg = (masks > 1).long()
    expected = F.binary_cross_entropy_with_logits(logits[:, :1], fg[:, None].float())
    assert float(binary.loss(logits[:, :1], fg)) == pytest.approx(float(expected), rel=1e-6)

    # Confident logits make the soft Dice the hard one: 1 - mean over classes of (2|A&B| + 1) / (|A| + |B| + 1).
    predicted = torch.randint(0, 4, (3, 8, 8), generator=gen)
    sharp = 50.0 * (2 * F.one_hot(predicted, 4).permute(0, 3, 1, 2).float() - 1)
    dice = SegmentationTask(classes, IGNORE, "dice")
    hand = []
    for p, t in zip(predicted, masks):
        per = [(2 * int(((p == c) & (t == c)).sum()) + 1) / (int((p == c).sum()) + int((t == c).sum()) + 1)
               for c in range(4)]
        hand.append(1 - sum(per) / 4)
    assert float(dice.loss(sharp, masks)) == pytest.approx(sum(hand) / 3, abs=1e-5)
    assert float(dice.loss(50.0 * (2 * F.one_hot(masks, 4).permute(0, 3, 1, 2).float() - 1), masks)) < 1e-5
    both = SegmentationTask(classes, IGNORE, "ce+dice")
    assert float(both.loss(logits, masks)) == pytest.approx(float(ce.loss(logits, masks) + dice.loss(logits, masks)))


def test_the_loss_has_gradients_only_through_counted_pixels() -> None:
    logits = torch.randn(1, 3, 4, 4, requires_grad=True)
    masks = torch.full((1, 4, 4), IGNORE)
    masks[0, 0, 0] = 2
    SegmentationTask(("a", "b", "c"), IGNORE, "ce+dice").loss(logits, masks).backward()
    assert logits.grad is not None
    moved = logits.grad.abs().sum((0, 1))
    assert moved[0, 0] > 0 and float(moved.sum() - moved[0, 0]) == 0.0


def test_the_predicted_class_is_the_first_largest_logit_as_argmax_gives() -> None:
    task = SegmentationTask(tuple(f"c{i}" for i in range(4)), IGNORE)
    logits = torch.randn(3, 4, 9, 7)
    logits[0, 2, 0, 0] = logits[0, 1, 0, 0] = logits[0, :, 0, 0].max() + 1  # a tie: the first one wins
    assert torch.equal(task.predicted(logits), logits.argmax(1)) and int(task.predicted(logits)[0, 0, 0]) == 1
    assert torch.equal(task.predicted(logits.contiguous(memory_format=torch.channels_last)), logits.argmax(1))


def test_segmentation_metrics_are_what_monitor_may_watch() -> None:
    kind = TASKS["segmentation"]
    assert kind.default_monitor == "val_miou"
    assert kind.monitorable == ("val_loss", "val_miou", "val_dice", "val_pixel_acc")
    assert kind.higher_is_better("val_pixel_acc") and not kind.higher_is_better("val_loss")
    assert kind.columns[:5] == ("epoch", "train_loss", "train_miou", "train_dice", "train_pixel_acc")
    assert default_palette(2) == [[0, 0, 0], [255, 255, 255]]
    assert default_palette(4) == [[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0]]  # PASCAL VOC's first colours



def test_every_task_kind_is_made_as_its_own_task() -> None:
    assert set(MAKERS) == set(TASKS)
    config = TrainingConfig.model_validate({"dataset": {"kind": "shapes"}})
    task = make_task(config, ("background", "square"))
    assert isinstance(task, SegmentationTask) and task.kind is TASKS["segmentation"]
    assert make_task(TrainingConfig(), ("a", "b")).kind is TASKS["classification"]

class Dense(nn.Module):
    """A tiny per-pixel classifier: a 1x1 convolution to the classes at full resolution."""

    def __init__(self, classes: int) -> None:
        super().__init__()
        self.head = nn.Conv2d(3, classes, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(x)


def split_and_model() -> tuple[TensorSplit, nn.Module, SegmentationTask]:
    gen = torch.Generator().manual_seed(4)
    images = torch.randint(0, 256, (10, 3, 6, 6), generator=gen, dtype=torch.uint8)
    masks = torch.randint(0, 3, (10, 6, 6), generator=gen)
    masks[:, 0, 0] = IGNORE
    torch.manual_seed(0)
    return TensorSplit(images, masks), Dense(3).eval(), SegmentationTask(("a", "b", "c"), IGNORE)


def evaluate(dist: Dist | None = None) -> tuple[float, dict[str, float]]:
    split, model, task = split_and_model()
    return evaluate_split(model, lambda x: x.float() / 255, split, task, batch_size=3, precision="fp32",
                          device=torch.device("cpu"), dist=dist)


def test_the_evaluation_loop_sums_the_confusion_matrix_over_its_batches() -> None:
    split, model, task = split_and_model()
    loss, metrics = evaluate()
    with torch.no_grad():
        logits = model(split.images.float() / 255)
    assert metrics == task.summarize([float(v) for v in task.tally(logits, split.labels)], 10)
    assert loss == pytest.approx(float(task.loss(logits, split.labels)), rel=1e-6)


def _rank(rank: int, init: str, out: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    try:
        found = evaluate(Dist(rank, 2))
    finally:
        dist.destroy_process_group()
    Path(out, f"{rank}.json").write_text(json.dumps(found))


@pytest.mark.skipif(sys.platform == "win32", reason="gloo file store")
def test_two_ranks_reduce_to_the_one_process_metrics(tmp_path: Path) -> None:
    import torch.multiprocessing as mp

    mp.spawn(_rank, args=(f"file://{tmp_path / 'store'}", str(tmp_path)), nprocs=2)
    one = list(evaluate())
    for rank in (0, 1):
        loss, metrics = json.loads((tmp_path / f"{rank}.json").read_text())
        assert loss == pytest.approx(one[0], rel=1e-12) and metrics == pytest.approx(one[1], rel=1e-12)
