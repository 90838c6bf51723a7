"""Every file the program writes goes through here: a crash or kill at any moment leaves either
the old file or the new one, never half of one, and nothing is ever written through a link.

`atomic_write` creates a fresh temporary file beside the target (a unique name, O_EXCL and
O_NOFOLLOW, so neither a planted file nor a symlink is opened), fsyncs it and renames it into
place; the rename replaces a link at the target itself, never the file it points to. The module
is torch-free and imports nothing above builder/lang, so every layer can use it.
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import stat
from collections.abc import Callable
from pathlib import Path
from typing import IO

from builder.lang.errors import BuilderError

TMP_SUFFIX = ".tmp"
TMP_NAME = re.compile(r"^\..+\.[0-9a-f]{12}\.tmp$")  # .<name>.<12 hex>.tmp: what a killed write leaves
_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


class WriteError(BuilderError):
    """A file that cannot be written (a read-only or missing directory, a full disk): one line,
    and the previous version of the file is intact."""


def temp_name(path: Path) -> Path:
    """A fresh temporary name beside `path` (matched by TMP_NAME)."""
    return path.with_name(f".{path.name}.{secrets.token_hex(6)}{TMP_SUFFIX}")


def atomic_write(path: Path, write: Callable[[IO[bytes]], object], *, replace: bool = True,
                 durable: bool = True) -> None:
    """Call `write` on a new temporary file beside `path`, fsync it, then rename it over `path`.
    `replace=False`: `path` must still not exist when the file is complete (another command may
    have created it meanwhile); it is then published with a hard link, which never replaces.
    `durable=False` skips the fsyncs (a power cut may lose the file, never show half of it): for
    many small outputs that a command can write again (predict's masks)."""
    path = Path(path)
    tmp, fd = _create_temp(path)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            if durable:
                os.fsync(f.fileno())
        _publish(tmp, path, replace)
    except FileExistsError:
        tmp.unlink(missing_ok=True)
        raise WriteError(f"cannot write {path}: another command created it meanwhile; it is untouched") from None
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        kept = "the previous version is intact" if path.exists() else "nothing was written"
        raise WriteError(f"cannot write {path}: {exc.strerror or exc}; {kept}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        _fsync_dir(path.parent)


def _publish(tmp: Path, path: Path, replace: bool) -> None:
    if replace:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)  # EEXIST if `path` appeared since the caller checked
    except FileExistsError:
        raise
    except OSError:  # a file system without hard links: the rename, as close as it allows
        if os.path.lexists(path):
            raise FileExistsError(path) from None
        os.replace(tmp, path)
        return
    tmp.unlink()


def _create_temp(path: Path) -> tuple[Path, int]:
    for _ in range(8):  # 48 random bits: a clash means someone planted the name; take another
        tmp = temp_name(path)
        try:
            return tmp, os.open(tmp, _NEW, 0o666)  # mode as umask allows, like open()
        except FileExistsError:
            continue
        except OSError as exc:
            raise WriteError(f"cannot write {path}: {exc.strerror or exc}") from None
    raise WriteError(f"cannot write {path}: no fresh temporary name beside it")


def write_bytes(path: Path, data: bytes, *, replace: bool = True, durable: bool = True) -> None:
    atomic_write(path, lambda f: f.write(data), replace=replace, durable=durable)


def write_text(path: Path, text: str, *, replace: bool = True) -> None:
    write_bytes(path, text.encode(), replace=replace)


def open_append(path: Path) -> IO[str]:
    """`path` opened for appending text (created if missing), never through a link nor into
    anything but a regular file (a FIFO would block, a device would take the text)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o666)
    except OSError as exc:
        why = {errno.ELOOP: "a symbolic link, never written through", errno.ENXIO: "not a regular file"}
        raise WriteError(f"cannot write {path}: {why.get(exc.errno or 0, exc.strerror or str(exc))}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise WriteError(f"cannot write {path}: not a regular file")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "a")


def _fsync_dir(path: Path) -> None:
    """Make the rename itself durable (where the platform allows opening a directory)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
