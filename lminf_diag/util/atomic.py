"""Atomic writes: a file or folder is written under a temporary name beside its target, then
renamed onto it, so a reader never sees a half-written result and an interrupted write leaves
the old one (or nothing) in place.

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> folder = Path(tempfile.mkdtemp())
    >>> atomic_write_text(folder / "a.txt", "hi").read_text()
    'hi'
    >>> atomic_write_bytes(folder / "b.bin", b"\\x00\\x01").read_bytes()
    b'\\x00\\x01'
    >>> sorted(p.name for p in folder.iterdir())  # no temporary file left behind
    ['a.txt', 'b.bin']
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

Pathish = str | os.PathLike[str]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: Pathish, write: Callable[[IO[bytes]], Any]) -> Path:
    """Call ``write(f)`` on a binary temporary file beside `path`, fsync it, then rename it onto `path`.

    The parent folder is created if needed; the file gets the ordinary permissions (umask), and
    the temporary file is removed when `write` raises.

    >>> import tempfile
    >>> atomic_write(tempfile.mkdtemp() + "/c.bin", lambda f: f.write(b"abc")).read_bytes()
    b'abc'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private; results are ordinary files
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_bytes(path: Pathish, data: bytes) -> Path:
    """Write `data` to `path` atomically (see `atomic_write`)."""
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: Pathish, text: str) -> Path:
    """Write `text` (UTF-8) to `path` atomically (see `atomic_write`)."""
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def atomic_dir(
    target: Pathish,
    build: Callable[[Path], Any],
    keep: Callable[[Path], bool] | None = None,
    prefix: str | None = None,
) -> Path:
    """Run ``build(tmp)`` into a temporary folder beside `target`, then rename it onto `target`.

    An existing `target` is replaced, unless `keep(target)` says it is already a finished copy:
    then it is left alone, and when another process renamed its own copy into place first, that
    copy wins. The temporary folder is removed on any failure. `prefix` names the temporary
    folder (default ``.<target name>.``).

    >>> import tempfile
    >>> out = atomic_dir(tempfile.mkdtemp() + "/run", lambda d: (d / "x.txt").write_text("1"))
    >>> sorted(p.name for p in out.iterdir())
    ['x.txt']
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=prefix or f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        build(tmp)
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; a result folder is ordinary
        if target.exists() and not (keep is not None and keep(target)):
            shutil.rmtree(target)  # left by a run that stopped half-way, or an older broken copy
        try:
            os.rename(tmp, target)
        except OSError:
            if keep is None or not keep(target):  # not a finished copy renamed by another process
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


__all__ = ["atomic_dir", "atomic_write", "atomic_write_bytes", "atomic_write_text"]
