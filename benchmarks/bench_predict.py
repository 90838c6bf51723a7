"""`predict` on the CIFAR-10 test JPEGs vs the trainer's own evaluation pass over the same folder
(goal: predict >= 0.9x the trainer's images/s).

    python benchmarks/bench_predict.py [--per-class 1000] [--workers 1] [--repeats 3] [--json FILE]

Needs ../shared/datasets/cifar10 (ImageFolder layout, JPEGs); without it the row says so and the
script exits 0. A run of alexnet_cifar.yaml is made without training (its weights at seed 0,
written as a run directory would be); then, interleaved:

- the trainer's evaluation pass (`Trainer.evaluate`) over the test folder decoded per batch
  (`in_memory: false`, the same number of decoding workers), at the recipe's batch size;
- `predict` (training.predict.predict) over the same files, top-1 only.

Both decode every JPEG and run the same model in fp32 on the CPU; images/s is files / wall s.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch
from common import ROOT, SPECS, Row, emit, interleaved, median, parser, spread

from builder.lang.loading import load_spec
from training import TrainingConfig
from training.checkpoint import WEIGHTS, save_weights
from training.data import load_data
from training.predict import find_images, predict
from training.rundir import write_run_files
from training.runinfo import load_run, write_run_info
from training.trainer import Trainer

CIFAR = ROOT.parent / "shared" / "datasets" / "cifar10"
SPEC = SPECS / "alexnet_cifar.yaml"


def subset(dest: Path, per_class: int) -> Path:
    """dest/test/<class>/<file> symlinks to the first N test files of each class (train: one each)."""
    for split, count in (("test", per_class), ("train", 1)):
        for folder in sorted((CIFAR / split).iterdir()):
            (dest / split / folder.name).mkdir(parents=True)
            for f in sorted(folder.iterdir())[:count]:
                (dest / split / folder.name / f.name).symlink_to(f)
    return dest


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--per-class", type=int, default=1000, help="test images per class (default 1000: all)")
    p.add_argument("--workers", type=int, default=1, help="decoding processes for both (default 1)")
    args = p.parse_args()
    command = f"python benchmarks/bench_predict.py --per-class {args.per_class} --workers {args.workers}"
    if not CIFAR.is_dir():
        emit([Row("predict vs trainer eval", "skipped: no CIFAR-10 folder", ">= 0.9x", None, command)], args.json)
        return
    with tempfile.TemporaryDirectory() as tmp:
        root = subset(Path(tmp) / "cifar", args.per_class)
        spec = load_spec(SPEC)
        recipe = {**(spec.training or {}), "workers": args.workers, "device": "cpu", "precision": "fp32",
                  "dataset": {"kind": "image_folder", "root": str(root), "in_memory": False, "val_fraction": 0}}
        config = TrainingConfig.model_validate(recipe)
        data = load_data(config.dataset, spec, args.workers)
        run_dir = Path(tmp) / "run"
        run_dir.mkdir()
        trainer = Trainer(spec, config, data, torch.device("cpu"), run_dir, True, lambda line: None)
        write_run_files(run_dir, spec, config)
        write_run_info(run_dir, spec, data)
        save_weights(trainer.model, run_dir / WEIGHTS)
        run = load_run(run_dir, "final")
        files = find_images([root / "test"])
        assert data.test is not None
        count = len(files)

        def trainer_eval() -> float:
            start = time.perf_counter()
            trainer.evaluate(data.test)
            return count / (time.perf_counter() - start)

        def predict_all() -> float:
            start = time.perf_counter()
            found, errors = predict(run, files, 1, args.workers)
            assert len(found) == count and not errors
            return count / (time.perf_counter() - start)

        rates = interleaved({"trainer": trainer_eval, "predict": predict_all}, args.repeats)
    ratio = median(rates["predict"]) / median(rates["trainer"])
    figure = (f"predict {median(rates['predict']):.0f} img/s vs trainer eval {median(rates['trainer']):.0f} img/s "
              f"= {ratio:.2f}x ({count:,} JPEGs, {args.workers} workers)")
    details = f"predict {spread(rates['predict'], '{:.0f}')}, trainer {spread(rates['trainer'], '{:.0f}')} img/s"
    emit([Row("predict vs trainer eval", figure, ">= 0.9x", ratio >= 0.9, command, details)], args.json)


if __name__ == "__main__":
    main()
