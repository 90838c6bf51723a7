"""Writing files: the one atomic write (builder.lang.files) and the rule for a path the user
names as an output (training.outputs), for every command that takes one."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import IO

import pytest

from builder.lang import files
from builder.lang.files import WriteError, atomic_write, open_append, write_bytes, write_text

Cli = Callable[..., tuple[int, str, str]]


# --- the atomic write ----------------------------------------------------------------------------------


def test_a_write_onto_a_symlink_replaces_the_link_and_never_its_target(tmp_path: Path) -> None:
    target, link = tmp_path / "target.txt", tmp_path / "link.txt"
    target.write_text("theirs")
    link.symlink_to(target)
    write_text(link, "ours")
    assert target.read_text() == "theirs"
    assert not link.is_symlink() and link.read_text() == "ours"


def test_a_planted_temporary_name_is_never_opened(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    names = iter(["a" * 12, "b" * 12])
    monkeypatch.setattr(files.secrets, "token_hex", lambda n: next(names))
    victim = tmp_path / "victim.txt"
    victim.write_text("theirs")
    (tmp_path / f".out.txt.{'a' * 12}.tmp").symlink_to(victim)  # the first name it would pick
    write_text(tmp_path / "out.txt", "ours")
    assert victim.read_text() == "theirs" and (tmp_path / "out.txt").read_text() == "ours"
    assert (tmp_path / f".out.txt.{'a' * 12}.tmp").is_symlink()  # left as it was


def test_a_failed_write_leaves_no_temporary_file_and_one_line(tmp_path: Path) -> None:
    def fail(f: object) -> None:
        raise OSError(28, "No space left on device")

    with pytest.raises(WriteError, match=r"^cannot write .*out\.bin: No space left on device; nothing was written$"):
        atomic_write(tmp_path / "out.bin", fail)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("durable", "syncs"), [(True, 2), (False, 0)])
def test_a_write_is_fsynced_unless_it_need_not_be_durable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          durable: bool, syncs: int) -> None:
    """predict's many masks skip the fsyncs (file and directory); every write is still a rename."""
    import os

    calls: list[int] = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append(fd), real(fd))[1])
    write_bytes(tmp_path / "m.png", b"png", durable=durable)
    assert (tmp_path / "m.png").read_bytes() == b"png" and [p.name for p in tmp_path.iterdir()] == ["m.png"]
    assert len(calls) == syncs


def test_a_new_file_never_replaces_one_another_command_created_meanwhile(tmp_path: Path) -> None:
    out = tmp_path / "model.onnx"

    def racing(f: IO[bytes]) -> None:  # a second export finishing first, while this one writes
        out.write_text("theirs")
        f.write(b"ours")

    with pytest.raises(WriteError, match=r"another command created it meanwhile; it is untouched$"):
        atomic_write(out, racing, replace=False)
    assert out.read_text() == "theirs" and sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]
    write_text(tmp_path / "new.txt", "ours", replace=False)
    assert (tmp_path / "new.txt").read_text() == "ours"


@pytest.mark.parametrize("kind", ["symlink", "fifo"])
def test_appending_never_goes_through_a_link_or_into_a_fifo(tmp_path: Path, kind: str) -> None:
    log, victim = tmp_path / "train.log", tmp_path / "victim"
    if kind == "symlink":
        victim.write_text("theirs")
        log.symlink_to(victim)
    else:
        os.mkfifo(log)
    with pytest.raises(WriteError, match=r"^cannot write .*train\.log: (a symbolic link|not a regular file)"):
        open_append(log)
    assert kind == "fifo" or victim.read_text() == "theirs"


# --- the output rule, per command ------------------------------------------------------------------------


def _commands(run: Path) -> dict[str, Callable[[Path], tuple[object, ...]]]:
    return {
        "draw": lambda out: ("draw", "lenet5", "-o", out),
        "port-weights": lambda out: ("port-weights", "lenet5", run / "w.pth", "-o", out),
        "bench": lambda out: ("bench", "lenet5", "--json", out),
        "predict": lambda out: ("predict", run, run / "img.png", "-o", out),
        "export": lambda out: ("export", run, "--format", "onnx", "-o", out),
    }


COMMANDS = ["draw", "port-weights", "bench", "predict", "export"]


@pytest.fixture
def places(tmp_path: Path) -> dict[str, Path]:
    """What a careless -o could destroy: a user's file, a link's target, a run's own files, a FIFO."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text('{"format": "cnn-builder-run"}')
    (run / "metrics.csv").write_text("epoch,test_acc\n1,0.5\n")
    (tmp_path / "mine.png").write_text("user data")
    (tmp_path / "target.png").write_text("link target")
    (tmp_path / "link.png").symlink_to(tmp_path / "target.png")
    os.mkfifo(tmp_path / "fifo.png")
    return {"run": run, "user file": tmp_path / "mine.png", "symlink": tmp_path / "link.png",
            "metrics.csv": run / "metrics.csv", "run.json": run / "run.json", "fifo": tmp_path / "fifo.png"}


def _state(path: Path) -> tuple[object, ...]:
    """Everything about `path` an overwrite would change (a link's target read through it)."""
    st = os.lstat(path)
    content = path.read_text() if stat.S_ISREG(st.st_mode) or path.is_symlink() else None
    return st.st_ino, stat.S_IFMT(st.st_mode), content


def _refused(cli: Cli, args: tuple[object, ...], expected: str) -> None:
    code, out, err = cli(*args)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert expected in err, err


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize(("place", "why"), [
    ("user file", "exists; pass --force to replace it"),
    ("symlink", "a symbolic link (its target is never written); pass --force to replace the link"),
    ("fifo", "not a regular file; pass --force to replace it"),
])
def test_an_existing_target_is_refused_without_force_and_untouched(
    places: dict[str, Path], cli: Cli, command: str, place: str, why: str
) -> None:
    path = places[place]
    before = _state(path)
    flag = "--json" if command == "bench" else "-o"
    _refused(cli, _commands(places["run"])[command](path), f"error: {flag} {path}: {why}")
    assert _state(path) == before


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("place", ["metrics.csv", "run.json"])
@pytest.mark.parametrize("force", [False, True])
def test_a_runs_own_files_are_never_replaced(
    places: dict[str, Path], cli: Cli, command: str, place: str, force: bool
) -> None:
    path = places[place]
    before = _state(path)
    args = _commands(places["run"])[command](path) + (("--force",) if force else ())
    _refused(cli, args, f"a file of the run in {places['run']}; a run's own files are never replaced")
    assert _state(path) == before


@pytest.mark.parametrize("command", COMMANDS)
def test_a_device_node_is_never_written_even_with_force(places: dict[str, Path], cli: Cli, command: str) -> None:
    args = (*_commands(places["run"])[command](Path("/dev/null")), "--force")
    _refused(cli, args, "/dev/null: a device; never written")
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


@pytest.mark.parametrize("command", COMMANDS)
def test_a_new_file_inside_a_run_needs_force(places: dict[str, Path], cli: Cli, command: str) -> None:
    run = places["run"]
    why = f"inside the run directory {run}; pass --force to write there"
    _refused(cli, _commands(run)[command](run / "new.png"), why)
    assert not (run / "new.png").exists()


@pytest.mark.parametrize("command", ["port-weights", "bench", "predict", "export"])
def test_a_missing_output_folder_is_one_line(places: dict[str, Path], cli: Cli, command: str, tmp_path: Path) -> None:
    _refused(cli, _commands(places["run"])[command](tmp_path / "nowhere" / "x.png"),
             f"no such directory {tmp_path / 'nowhere'}")


def test_force_replaces_a_file_or_the_link_itself_and_writes_inside_a_run(places: dict[str, Path], cli: Cli) -> None:
    for path in (places["user file"], places["symlink"], places["run"] / "drawing.png"):
        code, _, err = cli("draw", "lenet5", "-o", path, "--force")
        assert code == 0, err
        assert not path.is_symlink() and path.read_bytes().startswith(b"\x89PNG")
    assert places["symlink"].with_name("target.png").read_text() == "link target"
