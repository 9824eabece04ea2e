"""The one checksum record: ``{"sha256": ..., "bytes": ...}`` per file, written and verified here.

Bundles, checkpoints, datasets and world-model files all list their files this way, so a file that was
changed, truncated or lost after it was written is refused the same way, with the same words, wherever
it turns up. Each caller names its own error type and the fix that fits its artifact.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional

from physai.core.io import sha256_file


def file_record(path: Path) -> dict[str, Any]:
    """The checksum record of a file on disk."""
    path = Path(path)
    return {"sha256": sha256_file(path), "bytes": path.stat().st_size}


def bytes_record(data: bytes) -> dict[str, Any]:
    """The checksum record of bytes about to be written (or just read)."""
    return {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}


def files_section(directory: Path, names: Optional[Iterable[str]] = None) -> dict[str, dict[str, Any]]:
    """Records of ``names`` under ``directory`` (default: every file below it, by relative path)."""
    directory = Path(directory)
    if names is None:
        names = [str(p.relative_to(directory)) for p in sorted(directory.rglob("*")) if p.is_file()]
    return {name: file_record(directory / name) for name in names}


def read_json_object(path: Path, *, error: type[Exception], missing: str, fix: str) -> dict[str, Any]:
    """A manifest (or metadata) file as a dict; ``missing`` when it is absent, ``fix`` when it is unreadable."""
    path = Path(path)
    if not path.is_file():
        raise error(missing)
    try:
        value = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise error(f"{path} is not valid JSON ({exc}); {fix}") from None
    if not isinstance(value, dict):
        raise error(f"{path} holds a JSON {type(value).__name__}, not an object; {fix}")
    return value


def file_status(path: Path, record: Mapping[str, Any]) -> dict[str, Any]:
    """Whether ``path`` matches ``record``: ``status`` is ``ok``, ``mismatch`` or ``missing``."""
    path = Path(path)
    expected = record.get("sha256") if isinstance(record, Mapping) else None
    if not path.is_file():
        return {"file": str(path), "status": "missing", "expected": expected, "actual": None}
    actual = sha256_file(path)
    return {"file": str(path), "status": "ok" if actual == expected else "mismatch", "expected": expected,
            "actual": actual}


def listed_path(directory: Path, name: str, *, error: type[Exception], manifest: str) -> Path:
    """``directory / name`` for a name a manifest lists; a name that leads out of the directory is refused."""
    path = (Path(directory) / name).resolve()
    if Path(name).is_absolute() or not path.is_relative_to(Path(directory).resolve()):
        raise error(f"{manifest} lists {name!r}, which is outside {directory}; the manifest was not written by "
                    f"physai or was tampered with")
    return Path(directory) / name


def problem(status: Mapping[str, Any], manifest: str, fix: str) -> Optional[str]:
    """The message for a file that failed (None when it is fine); ``manifest`` names where its record lives."""
    if status["status"] == "missing":
        return f"{status['file']} is listed in the manifest {manifest} but missing; {fix}"
    if status["status"] == "mismatch":
        return (f"{status['file']} does not match its manifest checksum (sha256 {status['actual']}, but {manifest} "
                f"records {status['expected']}): it was changed or corrupted after it was written; {fix}")
    return None


def verify_bytes(path: Path, record: Mapping[str, Any], *, error: type[Exception], manifest: str, fix: str) -> bytes:
    """The bytes of ``path`` after checking them against ``record``: what was checked is what gets used."""
    path = Path(path)
    if not path.is_file():
        raise error(problem(file_status(path, record), manifest, fix))
    data = path.read_bytes()
    actual = hashlib.sha256(data).hexdigest()
    expected = record.get("sha256") if isinstance(record, Mapping) else None
    if actual != expected:
        raise error(problem({"file": str(path), "status": "mismatch", "expected": expected, "actual": actual},
                            manifest, fix))
    return data


def verify_files(directory: Path, files: Mapping[str, Mapping[str, Any]], *, error: type[Exception], manifest: str,
                 fix: str) -> None:
    """Check every listed file under ``directory``; raise ``error`` at the first that is missing or changed."""
    for name, record in files.items():
        message = problem(file_status(listed_path(directory, name, error=error, manifest=manifest), record),
                          manifest, fix)
        if message:
            raise error(message)
