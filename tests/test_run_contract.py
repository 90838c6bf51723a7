"""The run-directory contract (training/runfiles.py): everything a run directory holds is read back
checked. A file that is damaged, edited, special (a FIFO, a device) or too large is one line and
exit 2, never a traceback or a hang, and nothing that was there before is changed."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from test_trainer import DIGITS_SPEC
from test_use_run import digits_tree

from builder.lang.loading import dump_spec, load_spec
from builder.tools.cli import main
from training.checkpoint import load_checkpoint, save_checkpoint
from training.runfiles import (
    BEST,
    CHECKPOINT,
    EVENTS,
    METRICS,
    RECORD,
    RUN_INFO,
    WEIGHTS,
    EndEvent,
    EpochEvent,
    StartEvent,
    read_events,
    report_dir,
)

Cli = Callable[..., tuple[int, str, str]]
NAMED = DIGITS_SPEC.replace("name: tiny_digits", 'name: "1e3"')  # a name YAML 1.1 reads as text, ours as a float


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One finished run (one epoch) of a spec named "1e3"; tests copy it before changing anything."""
    tmp = tmp_path_factory.mktemp("contract")
    (tmp / "spec.yaml").write_text(NAMED)
    assert main(["train", str(tmp / "spec.yaml"), "--out", str(tmp / "run"), "--epochs", "1", "--quiet"]) == 0
    Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8) * 4, "L").save(tmp / "digit.png")
    return tmp / "run"


def snapshot(root: Path) -> dict[str, Any]:
    """Every entry below `root`: a regular file's bytes, a link's target, another entry's kind."""
    found: dict[str, Any] = {}
    for path in sorted(root.rglob("*")):
        mode = path.lstat().st_mode
        key = str(path.relative_to(root))
        found[key] = (os.readlink(path) if stat.S_ISLNK(mode) else path.read_bytes() if stat.S_ISREG(mode)
                      else stat.S_IFMT(mode))
    return found


def one_line(cli: Cli, code: int, *args: object) -> str:
    """Run the CLI: the exit code, and stderr exactly one line with no traceback; that line."""
    got, _, stderr = cli(*args)
    lines = stderr.strip().splitlines()
    assert got == code and len(lines) == 1 and "Traceback" not in stderr, (got, stderr)
    return lines[0]


@contextmanager
def no_hang(seconds: int = 60) -> Iterator[None]:
    """Fail (instead of blocking the suite) if the body waits on a FIFO."""

    def expired(signum: int, frame: object) -> None:
        raise AssertionError("blocked: a special file was read")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def copy(run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run, tmp_path / "run"))


# --- the dumped spec round-trips -------------------------------------------------------------------


def test_the_run_of_a_spec_named_1e3_reads_back(run: Path, cli: Cli) -> None:
    assert load_spec(run / "spec.yaml").name == "1e3" and "name: '1e3'" in (run / "spec.yaml").read_text()
    code, stdout, _ = cli("predict", run, run.parent / "digit.png")
    assert code == 0 and "digit.png" in stdout


@settings(max_examples=60, deadline=None)
@given(st.text(alphabet="0123456789eE._-+xXoObB", min_size=1, max_size=8) | st.sampled_from(
    ["1e3", "1E-5", "1_000", "0x1F", "0o17", ".5e3", "1.", "-1", "1:20", "nan", "inf", "NaN", "yes", "Off", "null"]))
def test_every_name_dumps_and_loads_back(tmp_path_factory: pytest.TempPathFactory, name: str) -> None:
    from builder.lang.errors import SpecError

    text = DIGITS_SPEC.replace("name: tiny_digits", f"name: {json.dumps(name)}")
    path = tmp_path_factory.mktemp("n") / "spec.yaml"
    path.write_text(text)
    try:
        spec = load_spec(path)
    except SpecError:
        return  # a name the spec refuses (its pattern) is never dumped
    path.write_text(dump_spec(spec))
    assert load_spec(path) == spec


def nested(depth: int) -> str:
    """A spec whose one block is `depth` templates, each a sequence of the next."""
    lines = ["name: deep", "input: {channels: 1, height: 8, width: 8}", "num_classes: 2",
             "classifier: {hidden: [], dropout: 0, adaptive_pool: [1, 1]}", "templates:"]
    for k in range(1, depth + 1):
        block = ("{out_channels: 2, kernel_size: 3, padding: 1}" if k == depth
                 else f"{{kind: sequence, blocks: [{{kind: use, template: t{k + 1}}}]}}")
        lines += [f"  t{k}:", "    params: []", f"    block: {block}"]
    return "\n".join([*lines, "blocks: [{kind: use, template: t1}]"]) + "\n"


def test_a_spec_nested_26_templates_deep_resolves_to_a_file_that_loads_back(tmp_path: Path, cli: Cli) -> None:
    (tmp_path / "deep.yaml").write_text(nested(26))
    code, stdout, _ = cli("resolve", tmp_path / "deep.yaml")
    assert code == 0
    (tmp_path / "resolved.yaml").write_text(stdout)
    assert load_spec(tmp_path / "resolved.yaml") == load_spec(tmp_path / "deep.yaml")


def test_a_spec_too_deep_to_read_back_is_refused_before_anything_is_written(tmp_path: Path, cli: Cli) -> None:
    (tmp_path / "deep.yaml").write_text(nested(60))
    line = one_line(cli, 2, "resolve", tmp_path / "deep.yaml")
    assert line == ("the resolved spec deep: error: nests 121 levels deep; at most 100 can be written as YAML and "
                    "read back")
    assert one_line(cli, 2, "train", tmp_path / "deep.yaml", "--out", tmp_path / "r", "--epochs", "1") == line
    assert not (tmp_path / "r").exists()


# --- files that are not a spec -----------------------------------------------------------------------


@pytest.mark.parametrize("content", [
    "root:$6$saltsalt$s3cr3tHASH:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\n",  # /etc/shadow
    "password: s3cr3tHASH\ntoken: s3cr3tHASH\n",  # a YAML mapping that is no spec
])
def test_a_base_that_is_not_a_spec_is_never_quoted(tmp_path: Path, cli: Cli, content: str) -> None:
    (tmp_path / "secret").write_text(content)
    (tmp_path / "spec.yaml").write_text(f"extends: {tmp_path / 'secret'}\nname: x\n")
    line = one_line(cli, 2, "validate", tmp_path / "spec.yaml")
    assert "is not a spec" in line and "s3cr3t" not in line and "daemon" not in line and "password" not in line
    line = one_line(cli, 2, "validate", tmp_path / "secret")
    assert "not a spec" in line and "s3cr3t" not in line


@pytest.mark.skipif(not os.access("/etc/shadow", os.R_OK), reason="/etc/shadow is not readable here")
def test_extends_etc_shadow_shows_none_of_it(tmp_path: Path, cli: Cli) -> None:
    (tmp_path / "spec.yaml").write_text("extends: /etc/shadow\n")
    _, _, stderr = cli("validate", tmp_path / "spec.yaml")
    assert not any(line and line in stderr for line in Path("/etc/shadow").read_text().splitlines())


# --- checkpoints -------------------------------------------------------------------------------------------


def _set(path: tuple[Any, ...], value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(state: dict[str, Any]) -> None:
        target = state
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return edit


def _drop_history_field(state: dict[str, Any]) -> None:
    del state["position"]["history"][0]["val_acc"]


def _momentum_of_another_shape(state: dict[str, Any]) -> None:
    state["optimizer"]["state"][0]["momentum_buffer"] = torch.zeros(3)


def _first_tensor_resized(state: dict[str, Any]) -> None:
    name = next(iter(state["model"]))
    state["model"][name] = torch.zeros(2, 2)


CHECKPOINT_EDITS = {
    "epoch a string": (_set(("position", "epoch"), "1"), "position: epoch: Input should be a valid integer"),
    "torch RNG state of the wrong size": (_set(("rng", "torch"), torch.zeros(10, dtype=torch.uint8)), "rng.torch"),
    "python RNG state of the wrong size": (_set(("rng", "python"), [3, [1, 2, 3], None]), "rng.python"),
    "numpy RNG key out of range": (_set(("rng", "numpy", "state", "key"), [2**40] * 624), "rng.numpy"),
    "an unexpected key": (_set(("extra",), 1), "holds unexpected keys (extra)"),
    "a history row missing a field": (_drop_history_field, "position.history[0] does not have the task's columns"),
    "a weight of another shape": (_first_tensor_resized, "model: "),
    "momentum of another shape": (_momentum_of_another_shape, "optimizer.state[0].momentum_buffer"),
    "schedule fields of another type": (_set(("scheduler", "base_lrs"), "x"), "scheduler.base_lrs is a string"),
    "a step beyond the epoch": (_set(("position", "step"), 10**6), "position.step 1000000 is beyond an epoch"),
    "a tally of another task": (_set(("position", "tally"), [1.0, 2.0]), "position.tally has 2 counts"),
    "a config that does not validate": (_set(("config", "epochs"), "x"), "config: epochs"),
    "a tensor in the spec": (_set(("spec", "name"), torch.zeros(1)), "spec is not plain data"),
    "a best epoch after the end": (_set(("position", "best_epoch"), 7), "position.best_epoch (7) is after"),
}


@pytest.mark.parametrize("case", CHECKPOINT_EDITS)
def test_an_edited_checkpoint_with_a_recomputed_checksum_is_one_line(
    run: Path, tmp_path: Path, cli: Cli, case: str
) -> None:
    edit, message = CHECKPOINT_EDITS[case]
    target = copy(run, tmp_path)
    state = load_checkpoint(target / CHECKPOINT)
    edit(state)
    save_checkpoint(target / CHECKPOINT, {k: v for k, v in state.items() if k not in ("format", "version")})
    before = snapshot(target)
    line = one_line(cli, 2, "train", "--resume", target, "--epochs", "2", "--quiet")
    assert line.startswith(f"error: {target / CHECKPOINT}") and message in line, line
    assert snapshot(target) == before


def test_a_checkpoint_that_is_a_fifo_is_refused_at_once(run: Path, tmp_path: Path, cli: Cli) -> None:
    target = copy(run, tmp_path)
    (target / CHECKPOINT).unlink()
    os.mkfifo(target / CHECKPOINT)
    with no_hang():
        line = one_line(cli, 2, "train", "--resume", target, "--epochs", "2", "--quiet")
    assert "is not a regular file" in line


# --- weights --------------------------------------------------------------------------------------------


def flip_a_data_bit(path: Path) -> None:
    data = bytearray(path.read_bytes())
    header = 8 + int.from_bytes(data[:8], "little")
    data[header + (len(data) - header) // 2] ^= 0x10
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("command", [["predict", "{run}", "{image}"], ["evaluate", "{run}"],
                                     ["export", "{run}", "--format", "onnx", "-o", "{tmp}/m.onnx"]])
def test_a_flipped_bit_in_the_weights_is_refused(run: Path, tmp_path: Path, cli: Cli, command: list[str]) -> None:
    target = copy(run, tmp_path)
    for name in (WEIGHTS, BEST):
        flip_a_data_bit(target / name)
    before = snapshot(target)
    args = [a.format(run=target, image=run.parent / "digit.png", tmp=tmp_path) for a in command]
    line = one_line(cli, 2, *args)
    assert "is damaged: its tensors do not match their checksum" in line
    assert snapshot(target) == before and not (tmp_path / "m.onnx").exists()


def test_weights_without_a_checksum_are_not_a_runs(run: Path, tmp_path: Path, cli: Cli) -> None:
    from safetensors.torch import load_file, save_file

    target = copy(run, tmp_path)
    save_file(load_file(str(target / BEST)), str(target / BEST))  # the same tensors, no metadata
    assert "has no checksum" in one_line(cli, 2, "predict", target, run.parent / "digit.png")


# --- run.json ---------------------------------------------------------------------------------------------


def _edit_info(change: Callable[[dict[str, Any]], None]) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        info = json.loads(path.read_text())
        change(info)
        path.write_text(json.dumps(info))
    return write


def _replace(path: Path, make: Callable[[Path], None]) -> None:
    path.unlink()
    make(path)


RUN_INFO_EDITS: dict[str, tuple[Callable[[Path], None], str]] = {
    "classes as a number": (_edit_info(lambda i: i.update(classes=10)), "classes: Input should be a valid list"),
    "no preprocess": (_edit_info(lambda i: i.pop("preprocess")), "preprocess: Field required"),
    "a height the spec does not have": (_edit_info(lambda i: i["input"].update(height=9)),
                                        "input.height is 9 but the run's spec.yaml says 8"),
    "a huge size": (_edit_info(lambda i: i["input"].update(width=10**12)), "input.width: Input should be less"),
    "mean and std of another channel count": (_edit_info(lambda i: i["preprocess"].update(mean=[0.1, 0.2])),
                                              "one value per input channel"),
    "a std of 0": (_edit_info(lambda i: i["preprocess"].update(std=[0.0])), "preprocess.std.0: Input should be"),
    "classes the spec does not have": (_edit_info(lambda i: i.update(classes=["a", "b"])), "num_classes 10"),
    "NaN": (lambda p: p.write_text(p.read_text().replace('"scale": 0.00392156862745098', '"scale": NaN')),
            "NaN is not a number this program writes"),
    "not JSON": (lambda p: p.write_bytes(b"\x89PNG"), "is not UTF-8 text"),
    "nested without end": (lambda p: p.write_text("[" * 100_000), "nested too deeply"),
    "larger than 4 MiB": (lambda p: p.write_text(" " * (4 * 2**20 + 1)), "is larger than 4 MiB"),
    "a FIFO": (lambda p: _replace(p, os.mkfifo), "is not a regular file (a pipe, device or socket)"),
    "a link to /dev/zero": (lambda p: _replace(p, lambda q: q.symlink_to("/dev/zero")), "is not a regular file"),
}


@pytest.mark.parametrize("case", RUN_INFO_EDITS)
@pytest.mark.parametrize("command", ["predict", "evaluate", "export"])
def test_an_edited_run_json_is_one_line_for_every_command(
    run: Path, tmp_path: Path, cli: Cli, case: str, command: str
) -> None:
    edit, message = RUN_INFO_EDITS[case]
    target = copy(run, tmp_path)
    edit(target / RUN_INFO)
    before = snapshot(target)
    extra = {"predict": [run.parent / "digit.png"], "evaluate": [], "export": ["--format", "onnx"]}[command]
    with no_hang():
        line = one_line(cli, 2, command, target, *extra)
    assert line.startswith("error: ") and message in line, line
    assert snapshot(target) == before


# --- train --out onto a folder that is not a run --------------------------------------------------------


def test_out_onto_a_folder_that_merely_holds_a_run_json_is_refused(
    run: Path, tmp_path: Path, cli: Cli, write_spec: Callable[..., Path]
) -> None:
    spec = write_spec(DIGITS_SPEC, "tiny.yaml")
    for name, files in (("theirs", {RUN_INFO: '{"format": "cnn-builder-run", "mine": true}'}),
                        ("copied", {RUN_INFO: (run / RUN_INFO).read_text(), "notes.txt": "keep"})):
        folder = tmp_path / name
        folder.mkdir()
        for file, text in files.items():
            (folder / file).write_text(text)
        line = one_line(cli, 2, "train", spec, "--out", folder, "--epochs", "1")
        assert "holds no run of this trainer; its files are never overwritten" in line
        assert {p.name: p.read_text() for p in folder.iterdir()} == files


def test_a_failed_start_leaves_nothing_that_refuses_the_same_out(
    tmp_path: Path, cli: Cli, write_spec: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from builder.lang.files import WriteError
    from training import trainer

    spec = write_spec(DIGITS_SPEC, "tiny.yaml")

    def full_disk(*args: object) -> None:
        raise WriteError("cannot write run.json: No space left on device")

    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.setattr(trainer, "write_run_info", full_disk)  # after spec.yaml and summary.txt are written
    assert one_line(cli, 2, "train", spec, "--out", out, "--epochs", "1", "--quiet").endswith("No space left on device")
    assert list(out.iterdir()) == []  # the lock, spec.yaml and summary.txt of the failed start are gone
    (out / "spec.yaml").write_text("left by an older version")  # what a start killed by SIGKILL leaves
    (out / ".lock").write_text("")
    monkeypatch.undo()
    assert cli("train", spec, "--out", out, "--epochs", "1", "--quiet")[0] == 0


# --- evaluate's report folders ------------------------------------------------------------------------------


def test_two_evaluations_never_claim_the_same_report_folder(run: Path, tmp_path: Path, cli: Cli) -> None:
    target = copy(run, tmp_path)
    with report_dir(target, "best", None) as first, report_dir(target, "best", None) as second:
        assert (first.name, second.name) == ("evaluate-best", "evaluate-best-2")
        (first / "metrics.json").write_text("{}")
        with report_dir(target, "best", tmp_path / "out"):  # an explicit --out is locked while it is written
            line = one_line(cli, 2, "evaluate", target, "--out", tmp_path / "out")
            assert line == f"error: --out {tmp_path / 'out'} is in use by another evaluate; choose another --out"
    assert cli("evaluate", target)[0] == 0 and (target / "evaluate-best-3" / "metrics.json").is_file()
    assert (first / "metrics.json").read_text() == "{}" and list(second.iterdir()) == []


# --- the image cache ------------------------------------------------------------------------------------


def test_a_damaged_image_cache_is_decoded_anew_never_trained_on(tmp_path: Path) -> None:
    from training.config import ImageFolderData
    from training.data import load_data

    root = digits_tree(tmp_path / "digits")
    spec = load_spec(_write(tmp_path / "s.yaml", DIGITS_SPEC))
    config = ImageFolderData(kind="image_folder", root=str(root), in_memory=True, cache_dir=str(tmp_path / "cache"))
    first = load_data(config, spec)
    (cache,) = (tmp_path / "cache").iterdir()
    data = bytearray(cache.read_bytes())
    header = 8 + int.from_bytes(data[:8], "little")
    data[header:] = bytes(len(data) - header)  # every image zeroed, the header intact
    cache.write_bytes(bytes(data))
    with pytest.warns(UserWarning, match=r"cannot be used \(.* is damaged"):
        again = load_data(config, spec)
    assert torch.equal(again.train.images, first.train.images) and again.mean == first.mean  # type: ignore[attr-defined]
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_data(config, spec)  # rewritten: the next run reads it without a word
    assert not [w for w in caught if "image cache" in str(w.message)]


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# --- image formats -------------------------------------------------------------------------------------------


def test_a_postscript_file_named_png_never_reaches_pillows_eps_plugin(
    run: Path, tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    from PIL import EpsImagePlugin

    def opened(*args: object) -> None:
        raise AssertionError("the EPS plugin read the file")

    monkeypatch.setattr(EpsImagePlugin.EpsImageFile, "_open", opened)
    (tmp_path / "photo.png").write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\nshowpage\n")
    code, _, stderr = cli("predict", run, tmp_path / "photo.png", "--workers", "0")
    assert code == 1 and stderr.strip() == (f"skipped: {tmp_path / 'photo.png'}: cannot read image: not a JPEG, PNG, "
                                            "BMP, WEBP image")


def test_a_fifo_named_like_an_image_is_refused_not_waited_on(run: Path, tmp_path: Path, cli: Cli) -> None:
    os.mkfifo(tmp_path / "photo.png")
    with no_hang():
        line = one_line(cli, 2, "predict", run, tmp_path / "photo.png")
    assert line == f"error: {tmp_path / 'photo.png'}: not a regular file (a pipe, device or socket); images are " \
                   "read from files"


# --- what the trainer reports for tools; the leaderboard ------------------------------------------------------


def test_the_trainer_reports_start_epochs_and_end_in_events(run: Path) -> None:
    events = read_events(run)
    assert [type(e) for e in events] == [StartEvent, EpochEvent, EndEvent]
    start = events[0]
    assert isinstance(start, StartEvent) and start.train_images == 1293 and start.epochs == 1 and not start.resumed


@pytest.mark.parametrize(("name", "make", "message"), [
    (METRICS, os.mkfifo, "is not a regular file"),
    (RECORD, os.mkfifo, "is not a regular file"),
    (EVENTS, lambda p: p.symlink_to("/dev/zero"), "is not a regular file"),
    (METRICS, lambda p: p.write_text("epoch,test_acc\n1,=HYPERLINK(1)\n"), ":2: test_acc is not a finite number"),
    (METRICS, lambda p: p.write_text("epoch,test_acc\n1,1e999\n"), ":2: test_acc is not a finite number"),
    (METRICS, lambda p: p.write_bytes(b"epoch\n1\x00\n"), ":2: epoch is not a finite number"),
    (METRICS, lambda p: p.write_text("epoch,test_acc\n2,0.5\n"), ":2: epoch must be 1"),
    (RECORD, lambda p: p.write_text('{"status": 3}'), "status: Input should be"),
    (EVENTS, lambda p: p.write_text('{"event": "epoch"}\n'), ":1: epoch.time: Field required (and 2 more problems)"),
    (EVENTS, lambda p: p.write_text('{"event": "start"'), ": the last line is incomplete"),
])
def test_a_damaged_run_in_a_sweep_is_a_row_and_one_line(
    run: Path, tmp_path: Path, cli: Cli, name: str, make: Callable[[Path], None], message: str
) -> None:
    sweep = tmp_path / "sweep"
    shutil.copytree(run, sweep / "good")
    bad = Path(shutil.copytree(run, sweep / "bad"))
    (bad / name).unlink(missing_ok=True)
    make(bad / name)
    before = snapshot(bad)
    with no_hang():
        line = one_line(cli, 2, "leaderboard", sweep)
    assert line.startswith(f"error: {bad / name}") and message in line, line
    rows = (sweep / "leaderboard.csv").read_text()
    assert ",good," in rows and ",unreadable," in rows
    assert snapshot(bad) == before


def test_a_fifo_in_an_image_folder_stops_the_start_with_one_line(
    tmp_path: Path, cli: Cli, write_spec: Callable[..., Path]
) -> None:
    root = digits_tree(tmp_path / "digits")
    os.mkfifo(root / "train" / "3" / "fifo.png")
    spec = write_spec(DIGITS_SPEC + f"  dataset: {{kind: image_folder, root: {root}}}\n", "folder.yaml")
    with no_hang():
        line = one_line(cli, 2, "train", spec, "--out", tmp_path / "r", "--epochs", "1", "--quiet")
    assert line == f"error: {root / 'train' / '3' / 'fifo.png'}: cannot read image: not a regular file (a pipe, " \
                   "device or directory)"
    assert not (tmp_path / "r").exists()


def test_a_report_folder_claimed_for_an_evaluation_that_fails_is_removed(run: Path, tmp_path: Path) -> None:
    target = copy(run, tmp_path)
    before = snapshot(target)
    with pytest.raises(RuntimeError), report_dir(target, "final", None) as folder:
        assert folder == target / "evaluate-final"
        raise RuntimeError("the evaluation failed")
    assert snapshot(target) == before
