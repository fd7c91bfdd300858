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
    >>> from lminf_diag.synthetic import make_trace
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
import os
import re
import shutil
from pathlib import Path
from typing import Any

from lminf_diag.capture.trace import Trace
from lminf_diag.errors import RunDirectoryError
from lminf_diag.util.atomic import atomic_dir, atomic_write_text
from lminf_diag.util.jsonsafe import to_json_safe
from lminf_diag.util.versions import git_hash, versions

RUN_FILE = "run.json"
RUN_FORMAT = "lminf_diag.run"
TRACES_DIR = "traces"


def trace_step(label: str) -> str:
    """The step name under which the trace of `label` is recorded.

    >>> trace_step("lambda")
    'trace:lambda'
    """
    return f"trace:{label}"


def now() -> str:
    """The current UTC time, ISO 8601 to the second."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _normalise(args: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(to_json_safe(args), sort_keys=True))


def settings_hash(settings: dict[str, Any], digits: int = 6) -> str:
    """A short, stable hash of a run's settings (key order and tuples vs lists do not matter).

    >>> settings_hash({"n_global": 10, "layers": (0, 1)}) == settings_hash({"layers": [0, 1], "n_global": 10})
    True
    >>> settings_hash({"n_global": 10}) == settings_hash({"n_global": 100})
    False
    """
    import hashlib

    text = json.dumps(_normalise(settings), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:digits]


def run_folder_name(verb: str, model: str, length: int | None, windows: int | None, settings: dict[str, Any]) -> str:
    """``<verb>-<model>-<length>-w<windows>-<hash of the settings>``: one folder per set of settings.

    The same command resumes the same folder; any other setting (an ablation) gets its own.
    `model` should already be folder-safe; empty parts are left out.

    >>> name = run_folder_name("entropy", "lab-rope", 512, 16, {"n_global": 10})
    >>> name.startswith("entropy-lab-rope-512-w16-"), len(name.rsplit("-", 1)[1])
    (True, 6)
    """
    parts = [verb, model, "" if length is None else str(length), "" if windows is None else f"w{windows}"]
    return "-".join([p for p in parts if p] + [settings_hash(settings)])


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
        target = atomic_dir(self._trace_dir(label), trace.save)  # replaces one left by an interrupted run
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
