"""Segmentation `predict` over 1,000 image files vs the evaluation pass over the same images
(goal: predict >= 0.9x the evaluation's images/s).

    python benchmarks/bench_seg_predict.py [--count 1000] [--workers 1] [--repeats 3] [--set PATH=VALUE] [--json FILE]

A run of unet_shapes.yaml (with any `--set` overrides: `--set width=1.0` is the full-width U-Net,
64-128-256-512 and a 1024 bottleneck, on the same data) is made without training (its seed-0 weights, written as a run
directory would be). `count` shapes images at the spec's 64x64 are written as PNG files; then,
interleaved:

- the evaluation pass (training.evaluation.evaluate_split, as the trainer's epochs and `evaluate`
  run it) over the same images and masks in memory, at the recipe's batch size;
- `predict` over the files (`-o DIR`: decode in `--workers` processes, normalize, pad, predict,
  write a mask PNG and an overlay PNG per image and fractions.csv) into a fresh directory.

Both run the same model in fp32 on the CPU; images/s is images / wall seconds.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from common import SPECS, Row, emit, interleaved, median, parser, spread
from PIL import Image

from builder.lang.loading import load_spec
from builder.model.build import build_model
from training import TrainingConfig
from training.checkpoint import WEIGHTS, save_weights
from training.data import load_data
from training.data.masks import MaskSplit
from training.data.shapes import generate
from training.evaluation import evaluate_split
from training.predict import find_images
from training.rundir import write_run_files
from training.runinfo import load_run, write_run_info
from training.tasks import PredictRequest
from training.tasks.make import make_task, run_task

SPEC = SPECS / "unet_shapes.yaml"


def make_run(root: Path, overrides: Sequence[str] = ()) -> Path:
    """A run directory of unet_shapes (with `overrides`) with its seed-0 weights."""
    spec = load_spec(SPEC, overrides)
    config = TrainingConfig.model_validate(spec.training or {})
    data = load_data(config.dataset, spec)
    run = root / "run"
    run.mkdir()
    write_run_files(run, spec, config)
    write_run_info(run, spec, data, make_task(config, data.classes))
    torch.manual_seed(0)
    save_weights(build_model(spec), run / WEIGHTS, {"spec": spec.name})
    return run


def write_pngs(folder: Path, images: torch.Tensor) -> list[Path]:
    folder.mkdir()
    for i, image in enumerate(images):
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(folder / f"{i:05d}.png")
    return find_images([folder])


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--count", type=int, default=1000)
    p.add_argument("--workers", type=int, default=1, help="predict's decoding processes (default 1)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="PATH=VALUE",
                   help="an override of unet_shapes.yaml, e.g. --set width=1.0")
    p.set_defaults(repeats=3)
    args = p.parse_args()
    sets = "".join(f" --set {o}" for o in args.overrides)
    command = f"python benchmarks/bench_seg_predict.py --count {args.count} --workers {args.workers}{sets}"
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = make_run(Path(tmp), args.overrides)
        run = load_run(run_dir, "final")
        task, spec = run_task(run), run.spec
        images, masks = generate(args.count, (spec.input.height, spec.input.width), 4, 0.1, seed=7)
        files = write_pngs(Path(tmp) / "images", images)
        split = MaskSplit(images, masks)
        batch = TrainingConfig.model_validate(spec.training or {}).batch_size
        prep = run.preprocess.batch_preprocess(None, torch.device("cpu"))  # as evaluate's
        outputs = iter(range(10**6))

        def evaluation() -> float:
            start = time.perf_counter()
            evaluate_split(run.model, prep, split, task, batch_size=batch, precision="fp32",
                           device=torch.device("cpu"))
            return args.count / (time.perf_counter() - start)

        def predict_all() -> float:
            out = Path(tmp) / f"out{next(outputs)}"
            start = time.perf_counter()
            _, errors = task.predict(run, PredictRequest(files, out, workers=args.workers))
            assert not errors and len(list(out.glob("*_mask.png"))) == args.count
            return args.count / (time.perf_counter() - start)

        rates = interleaved({"evaluation": evaluation, "predict": predict_all}, args.repeats)
    ratio = median(rates["predict"]) / median(rates["evaluation"])
    figure = (f"predict {median(rates['predict']):.1f} img/s vs evaluation {median(rates['evaluation']):.1f} img/s "
              f"= {ratio:.2f}x ({spec.name}{sets}, {args.count:,} PNGs at {spec.input.height}x{spec.input.width}, "
              f"{args.workers} workers, masks and overlays written)")
    details = (f"predict {spread(rates['predict'])}, evaluation {spread(rates['evaluation'])} img/s; "
               f"evaluation batch {batch}; predict decodes 32 files at a time and runs the model in batches of {batch}")
    emit([Row("segmentation predict vs evaluation pass", figure, ">= 0.9x", ratio >= 0.9, command, details)],
         args.json)


if __name__ == "__main__":
    main()
