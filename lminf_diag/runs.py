"""Run directories: where a CLI run keeps its traces, so that an interrupted run resumes.

A run directory is exactly the ``--out`` folder::

    <out>/run.json          args, versions, git hash, dates, finished steps with their seconds
    <out>/traces/<label>/   one saved `Trace` per capture pass (baseline, lambda, ...)
    <out>/*.html, *.json    reports and summaries

Opening a directory that holds a run with other arguments, or unrelated files, raises
`RunDirectoryError` (nothing is touched); with ``overwrite=True`` it is cleared, but only when
the first result is saved, so a run that fails before producing anything destroys nothing.
Every file is written to a temporary name and renamed into place, and a step is recorded in
``run.json`` only after its output is complete.

Example:
    >>> import tempfile
    >>> from tests.synthetic import make_trace
    >>> out = tempfile.mkdtemp() + "/run"
    >>> run = RunDir(out, {"model": "synthetic", "length": 64})
    >>> run.has(trace_step("baseline"))
    False
    >>> _ = run.save_trace("baseline", make_trace(n=64, train_len=16), seconds=1.5)
    >>> RunDir(out, {"model": "synthetic", "length": 64}).done_steps
    ['trace:baseline']
    >>> RunDir(out, {"model": "synthetic", "length": 128})  # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    lminf_diag.errors.RunDirectoryError: ... length: 64 in the saved run, 128 now ...
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from lminf_diag.capture.trace import Trace
from lminf_diag.errors import RunDirectoryError

RUN_FILE = "run.json"
RUN_FORMAT = "lminf_diag.run"
TRACES_DIR = "traces"
_PACKAGES = ("lminf_diag", "torch", "transformers", "numpy", "pandas", "plotly", "scikit-learn", "scipy")


def trace_step(label: str) -> str:
    """The step name under which the trace of `label` is recorded.

    >>> trace_step("lambda")
    'trace:lambda'
    """
    return f"trace:{label}"


def now() -> str:
    """The current UTC time, ISO 8601 to the second."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def versions() -> dict[str, str]:
    """Installed versions of Python and the libraries a run depends on (without importing them).

    >>> "python" in versions()
    True
    """
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    return out


def git_hash() -> str | None:
    """The commit of the lminf_diag source tree (``+dirty`` if modified), or None; never raises.

    >>> git_hash() is None or len(git_hash()) >= 7
    True
    """

    def git(*args: str) -> str:
        cwd = Path(__file__).resolve().parent
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=5, check=True)
        return done.stdout.strip()

    try:
        head, dirty = git("rev-parse", "HEAD"), git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    return f"{head}+dirty" if head and dirty else head or None


def to_json_safe(obj: Any) -> Any:
    """A copy of `obj` that `json.dumps(..., allow_nan=False)` accepts: NaN/inf become None,
    tuples and sets lists, numpy scalars and arrays plain Python, paths strings.

    >>> to_json_safe({"a": float("nan"), "b": (1, 2)})
    {'a': None, 'b': [1, 2]}
    """
    if isinstance(obj, dict):
        return {str(k): to_json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        return [to_json_safe(v) for v in obj]
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    tolist = getattr(obj, "tolist", None)  # numpy scalars and arrays
    if callable(tolist):
        return to_json_safe(tolist())
    return obj


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write `text` to a temporary file beside `path`, then rename it onto `path`.

    >>> import tempfile
    >>> atomic_write_text(tempfile.mkdtemp() + "/a.txt", "hi").read_text()
    'hi'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private; results are ordinary files
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _normalise(args: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(to_json_safe(args), sort_keys=True))


def _protected(path: Path) -> bool:
    """Folders that --overwrite must never clear: /, the home folder, the working directory and above."""
    cwd = Path.cwd().resolve()
    return path == Path(path.anchor) or path == Path.home().resolve() or path == cwd or path in cwd.parents


class RunDir:
    """A run's output folder; see the module docstring.

    `args` are the settings that define the results (model, text, length, modes, ...): a
    folder holding a run with other args is refused unless `overwrite`.
    """

    def __init__(self, path: str | os.PathLike[str], args: dict[str, Any], overwrite: bool = False):
        self.path = Path(path)
        self.args = _normalise(args)
        self.overwrite = overwrite
        self._started = False
        self.info: dict[str, Any] = {}
        if self.path.exists() and not self.path.is_dir():
            raise RunDirectoryError(f"--out {self.path} is a file, not a folder; choose another --out.")
        if overwrite:
            if self.path.exists() and _protected(self.path.resolve()):
                raise RunDirectoryError(
                    f"refusing to clear {self.path} with --overwrite (it is the root, home or working "
                    "folder, or holds it); choose a dedicated --out folder."
                )
            return
        saved = self._read() if (self.path / RUN_FILE).is_file() else None
        if saved is not None:
            diff = self._differences(saved.get("args", {}))
            if diff:
                raise RunDirectoryError(
                    f"{self.path} holds a run with other settings ({'; '.join(diff)}). Pass --overwrite "
                    "to replace it, or choose another --out."
                )
            self.info, self._started = saved, True
        elif self.path.is_dir() and any(self.path.iterdir()):
            raise RunDirectoryError(
                f"{self.path} is not empty and is not a run directory (no {RUN_FILE}). Pass --overwrite "
                "to clear it, or choose another --out."
            )

    @classmethod
    def open_existing(cls, path: str | os.PathLike[str]) -> RunDir:
        """Open a finished or partial run for reading, whatever its args.

        >>> RunDir.open_existing("/nonexistent")  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        lminf_diag.errors.RunDirectoryError: ...
        """
        path = Path(path)
        if not (path / RUN_FILE).is_file():
            raise RunDirectoryError(
                f"{path}: not a run directory (no {RUN_FILE}); pass a folder written by diag."
            )
        return cls(path, cls._read_file(path / RUN_FILE).get("args", {}))

    # ------------------------------------------------------------------ state

    @staticmethod
    def _read_file(file: Path) -> dict[str, Any]:
        try:
            info = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise RunDirectoryError(
                f"{file}: unreadable or not JSON ({e}); pass --overwrite to start afresh."
            ) from e
        if not isinstance(info, dict) or info.get("format") != RUN_FORMAT:
            raise RunDirectoryError(f"{file}: not a lminf_diag run file; pass --overwrite or another --out.")
        return info

    def _read(self) -> dict[str, Any]:
        return self._read_file(self.path / RUN_FILE)

    def _differences(self, saved: dict[str, Any]) -> list[str]:
        keys = sorted(set(saved) | set(self.args))
        return [
            f"{k}: {json.dumps(saved.get(k))} in the saved run, {json.dumps(self.args.get(k))} now"
            for k in keys
            if saved.get(k) != self.args.get(k)
        ]

    def start(self) -> RunDir:
        """Create the folder and run.json (clearing the folder first with overwrite); idempotent."""
        if self._started:
            return self
        if self.overwrite and self.path.exists():
            shutil.rmtree(self.path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.info = {
            "format": RUN_FORMAT,
            "format_version": 1,
            "args": self.args,
            "created": now(),
            "updated": now(),
            "versions": versions(),
            "git": git_hash(),
            "steps": {},
        }
        self._write()
        self._started = True
        return self

    def _write(self) -> None:
        self.info["updated"] = now()
        atomic_write_text(self.path / RUN_FILE, json.dumps(to_json_safe(self.info), indent=2) + "\n")

    @property
    def done_steps(self) -> list[str]:
        """Names of the finished steps, in the order they finished."""
        return list(self.info.get("steps", {}))

    @property
    def seconds(self) -> dict[str, float]:
        """Seconds each finished step took."""
        return {k: float(v.get("seconds") or 0.0) for k, v in self.info.get("steps", {}).items()}

    def has(self, step: str) -> bool:
        """True when `step` finished (for a trace step: and its trace folder is complete)."""
        if step not in self.info.get("steps", {}):
            return False
        if step.startswith("trace:"):
            return (self._trace_dir(step[len("trace:") :]) / "meta.json").is_file()
        return True

    def mark_done(self, step: str, seconds: float | None = None, **extra: Any) -> None:
        """Record `step` as finished in run.json (atomically)."""
        self.start()
        entry = {"seconds": None if seconds is None else round(float(seconds), 3), "finished": now(), **extra}
        self.info.setdefault("steps", {})[step] = entry
        self._write()

    # ------------------------------------------------------------------ results

    def _trace_dir(self, label: str) -> Path:
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", label).lstrip(".") or "trace"
        return self.path / TRACES_DIR / safe

    def save_trace(self, label: str, trace: Trace, seconds: float | None = None) -> Path:
        """Save `trace` into traces/<label> (temp folder, then rename), then record its step."""
        self.start()
        target = self._trace_dir(label)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
        try:
            trace.save(tmp)
            os.chmod(tmp, 0o755)
            if target.exists():  # left by a run that stopped before recording the step
                shutil.rmtree(target)
            os.rename(tmp, target)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        self.mark_done(trace_step(label), seconds, label=label)
        return target

    def load_trace(self, label: str) -> Trace:
        """The saved trace of `label` (RunDirectoryError if absent or damaged)."""
        return Trace.load(self._trace_dir(label))

    def trace_labels(self) -> list[str]:
        """Labels of the saved traces, in the order they were saved."""
        steps = self.info.get("steps", {})
        return [
            str(v.get("label", k[len("trace:") :]))
            for k, v in steps.items()
            if k.startswith("trace:") and self.has(k)
        ]

    def save_json(self, name: str, obj: Any) -> Path:
        """Write `obj` as `<out>/<name>` (NaN as null), atomically."""
        self.start()
        return atomic_write_text(self.path / name, json.dumps(to_json_safe(obj), indent=2) + "\n")
