"""`evaluate`: a run's weights on a split, as the trainer measures it, plus what the trainer does
not report (the task's report: for classification top-5, per-class precision/recall/F1/support,
a confusion matrix (CSV and PNG) and a grid of the most confidently wrong images).

The split is the run's own test split (the same subsets and order as training), or another
dataset given as `--data`; the preprocessing is the run's (run.json); the evaluation loop,
batches, precision and the loss are the trainer's, so its metrics and loss equal what the
trainer reported for the weights (with the run's test-time augmentation, `tta`, if any; the
weights of a run with `ema` are its averaged weights).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from builder.lang.files import write_text
from training.config import TrainingConfig
from training.data import Split, load_data
from training.runfiles import report_dir
from training.runinfo import LoadedRun, Weights, load_run
from training.tta import check_tta


@dataclass(frozen=True)
class Evaluation:
    """What evaluate_run found and wrote."""

    result: dict[str, Any]  # metrics.json
    files: tuple[str, ...]  # written into the output directory
    line: str  # the headline: "on 360 images: top-1 91.20% ..."
    out: Path  # the output directory


def evaluate_run(
    run_dir: Path, out: Path | None, *, weights: Weights = "best", config: TrainingConfig | None = None,
    device: str = "cpu",
) -> Evaluation:
    """Evaluate a run on its test split (or `config.dataset`) and write the reports into `out`
    (empty or new), by default a new RUN_DIR/evaluate-WEIGHTS[-N] (runfiles.report_dir)."""
    from training.evaluation import evaluate_split
    from training.tasks.make import run_task

    run = load_run(run_dir, weights, device)
    cfg = config or TrainingConfig.model_validate(run.spec.training or {})
    task = run_task(run, cfg)
    check_tta(cfg.tta, run.preprocess.size)
    split = test_split(cfg, run)
    kept, dev = task.keeper(), torch.device(device)
    loss, metrics = evaluate_split(
        run.model, run.preprocess.batch_preprocess(None, dev), split, task, batch_size=cfg.batch_size,
        precision=cfg.precision if cfg.precision != "auto" else "fp32", device=dev, keep=kept, tta=cfg.tta,
    )
    with report_dir(run_dir, weights, out) as out_dir:
        found, files = task.report(kept, loss, metrics, run, out_dir)
        result = {**found, "weights": weights, "run": str(run_dir)}
        write_text(out_dir / "metrics.json", json.dumps(result, indent=2) + "\n")
    return Evaluation(result, ("metrics.json", *files), task.result_line(result), out_dir)


def test_split(config: TrainingConfig, run: LoadedRun) -> Split:
    """The test split of the dataset (validation when it has no test split), as training loaded it."""
    from training.errors import RunDirError

    data = load_data(config.dataset, run.spec, config.workers)
    split = data.test if data.test is not None else data.val
    if split is None or len(split) == 0:
        raise RunDirError(f"the {data.name} dataset has no test or validation images to evaluate")
    return split
