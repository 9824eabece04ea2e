"""Crash-safe file writing and the run's ``summary.json``.

Every artifact is written to a temporary file in the same directory, fsynced and renamed
over the target, so a killed process leaves either the old file or the new one, never half.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

SUMMARY_FILE = "summary.json"
_UMASK = os.umask(0)
os.umask(_UMASK)


@contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``target``; on success it is fsynced and renamed onto it."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Keep the suffix: writers such as ffmpeg pick the container format from it.
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=f".tmp{target.suffix}", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; artifacts should be readable like any other
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, target)
        _fsync_dir(target.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def replace_dir_atomically(staging: Path, target: Path) -> None:
    """Move a fully written ``staging`` directory onto ``target``; a crash leaves one of the two whole."""
    for child in staging.iterdir():
        if child.is_file():
            with open(child, "rb") as handle:
                os.fsync(handle.fileno())
    if target.exists():
        retired = target.with_name(f".retired-{target.name}-{os.getpid()}")
        os.replace(target, retired)
        os.replace(staging, target)
        shutil.rmtree(retired)
    else:
        os.replace(staging, target)
    _fsync_dir(target.parent)


def retired_copies(target: Path) -> list[Path]:
    """Old versions of ``target`` that ``replace_dir_atomically`` moved aside, oldest first."""
    target = Path(target)
    pattern = re.compile(rf"^\.retired-{re.escape(target.name)}-\d+$")
    if not target.parent.is_dir():
        return []
    return sorted((p for p in target.parent.iterdir() if pattern.match(p.name)), key=lambda p: p.stat().st_mtime)


def recover_interrupted_swap(target: Path) -> None:
    """A swap killed between its two renames leaves the old version retired: put it back, drop the rest."""
    retired = retired_copies(target)
    if retired and not Path(target).exists():
        os.replace(retired.pop(), target)
    for leftover in retired:
        shutil.rmtree(leftover, ignore_errors=True)


def recover_interrupted_swaps(parent: Path) -> None:
    """Finish every swap a kill left behind under ``parent``, and drop half-built staging directories."""
    for retired in list(parent.glob(".retired-*")):
        recover_interrupted_swap(parent / retired.name[len(".retired-"):].rsplit("-", 1)[0])
    for staging in parent.glob(".staging-*"):
        shutil.rmtree(staging)


def fresh_staging_dir(target: Path) -> Path:
    """An empty directory beside ``target`` to assemble its next version in."""
    staging = target.with_name(f".staging-{target.name}-{os.getpid()}")
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    return staging


def write_bytes_atomic(target: str | os.PathLike, data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(target: str | os.PathLike, text: str) -> None:
    write_bytes_atomic(target, text.encode("utf-8"))


def write_json_atomic(target: str | os.PathLike, payload: Any) -> None:
    """Standard JSON only: NaN and infinities become null, so any language's parser reads the file."""
    text = json.dumps(finite_or_null(payload), indent=2, default=_json_default, allow_nan=False)
    write_text_atomic(target, text + "\n")


def finite_or_null(value: Any) -> Any:
    """A copy of a figure tree (dicts, lists, numpy arrays) with NaN and infinities as None: JSON's null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite_or_null(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_null(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        return finite_or_null(value.tolist())
    return value


def _json_default(value: Any) -> Any:
    # numpy scalars and arrays show up in figures; write them as plain numbers.
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_summary(run_dir: str | os.PathLike) -> dict[str, Any]:
    path = Path(run_dir) / SUMMARY_FILE
    if not path.exists():
        return {}
    return json.loads(path.read_text())


def update_summary(run_dir: str | os.PathLike, section: str, figures: dict[str, Any]) -> dict[str, Any]:
    """Replace one section of ``summary.json`` and keep every other section as it was."""
    summary = read_summary(run_dir)
    summary[section] = figures
    write_json_atomic(Path(run_dir) / SUMMARY_FILE, summary)
    return summary
