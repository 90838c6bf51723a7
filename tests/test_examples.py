"""Every command's `--help` example (builder.tools.cli.EXAMPLES, the one place they are written)
runs as written, from a scratch working directory: shipped specs by name, outputs under runs/.
Where the example names things the reader supplies (a run directory, images, a torchvision
state dict), the test makes them; where it would run for long, a faithful short version adds
only flags that shorten it (fewer epochs, steps, repeats, a smaller batch: the last one counts)."""

from __future__ import annotations

import shlex
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import ROOT

from builder.tools.cli import EXAMPLES

Cli = Callable[..., tuple[int, str, str]]
RUN = "runs/alexnet_digits-20250101-120000"  # the run directory the examples name
STANDALONE = ["validate", "summarize", "resolve", "diff", "list", "schema", "draw", "port-weights", "bench"]
SHORTER = {"bench": ["--steps", "1", "--warmup", "0", "--repeats", "1", "--batch-size", "8"]}  # bf16 on a CPU is slow


def words(name: str, **replace: str) -> tuple[list[str], str | None]:
    """The example's arguments after `python -m builder` (a comment dropped, `replace`d words
    swapped) and the file its stdout is redirected to, if any."""
    parts = shlex.split(EXAMPLES[name], comments=True)
    assert parts[:3] == ["python", "-m", "builder"] and parts[3] == name
    target = None
    if ">" in parts:
        parts, target = parts[: parts.index(">")], parts[parts.index(">") + 1]
    return [replace.get(w, w) for w in parts[3:]], target


@pytest.fixture
def scratch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working directory with runs/ (train and `make demo` create it in a checkout)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    return tmp_path


def _torchvision_state_dict(path: Path) -> None:
    import torch
    from torchvision.models import resnet18

    torch.save(resnet18().state_dict(), path)


@pytest.mark.parametrize("name", STANDALONE)
def test_each_standalone_example_runs_as_written(name: str, scratch: Path, cli: Cli) -> None:
    if name == "port-weights":
        _torchvision_state_dict(scratch / "resnet18_tv.pth")
    args, redirect = words(name)
    code, out, err = cli(*args, *SHORTER.get(name, []))
    assert code == 0, err
    if name == "schema":  # `> arch_specs/spec.schema.json`: what is committed there
        assert out == (ROOT / redirect).read_text() if redirect else False
    elif redirect:  # resolve: the output is a spec that loads back
        (scratch / redirect).write_text(out)
        assert cli("validate", redirect)[0] == 0
    written = [w for w in args if w.startswith("runs/")]
    assert all((scratch / w).is_file() for w in written), written


@pytest.mark.slow
def test_the_examples_that_use_a_run_work_on_the_run_trains_example(scratch: Path, cli: Cli) -> None:
    args, _ = words("train", **{"3": "1"})  # --epochs 3 -> 1
    assert args[-2:] == ["--epochs", "1"]
    assert cli(*args, "--quiet")[0] == 0
    (run,) = (scratch / "runs").glob("alexnet_digits-*")
    images = scratch / "my_images"
    images.mkdir()
    _digit_images(images)
    for name in ("evaluate", "predict", "export"):
        args, _ = words(name, **{RUN: str(run)})
        code, _, err = cli(*args)
        assert code == 0, f"{name}: {err}"
    assert (scratch / "runs" / "preds.csv").is_file() and (scratch / "runs" / "model.onnx").is_file()


def _digit_images(folder: Path) -> None:
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    for i in range(3):
        Image.fromarray((digits.images[i] * 255 / 16).astype("uint8")).save(folder / f"{i}.png")


@pytest.mark.slow
def test_the_sweep_example_is_the_readme_tours_and_runs_with_the_leaderboard_example(scratch: Path, cli: Cli) -> None:
    assert EXAMPLES["sweep"] in (ROOT / "README.md").read_text()
    code, out, err = cli(*words("sweep")[0])
    assert code == 0, err
    assert "2 done" in out
    code, out, err = cli(*words("leaderboard")[0])
    assert code == 0 and "width=0.5" in out and "width=1.0" in out, err


def test_every_example_is_run_by_a_test() -> None:
    assert set(EXAMPLES) == {*STANDALONE, "train", "evaluate", "predict", "export", "sweep", "leaderboard"}
