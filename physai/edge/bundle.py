"""The bundle format: ``policy.onnx`` + ``manifest.json`` with a sha256 for every file.

A bundle is refused before any session is created if its manifest is missing, of another
format version, or if any file differs from its recorded checksum.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from physai.errors import BundleError

FORMAT_NAME = "physai.bundle"
FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"
POLICY_FILE = "policy.onnx"
INPUT_NAME = "observation"
OUTPUT_NAME = "action"


def describe_space(space: Any, names: list[str]) -> dict[str, Any]:
    """A JSON description of a gymnasium Box or Discrete space (duck-typed: no gymnasium import here)."""
    if hasattr(space, "n") and not hasattr(space, "low"):
        return {"type": "Discrete", "n": int(space.n), "names": names}
    return {"type": "Box", "shape": list(space.shape), "dtype": str(np.dtype(space.dtype)),
            "low": np.asarray(space.low, dtype=np.float64).tolist(),
            "high": np.asarray(space.high, dtype=np.float64).tolist(), "names": names}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_manifest(bundle_dir: str | Path) -> dict[str, Any]:
    bundle_dir = Path(bundle_dir)
    path = bundle_dir / MANIFEST_FILE
    if not path.is_file():
        raise BundleError(f"{path} does not exist: point at a bundle directory written by the export stage "
                          f"(it holds {MANIFEST_FILE} and {POLICY_FILE})")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{path} is not valid JSON ({exc}); re-export the bundle") from exc
    if manifest.get("format") != FORMAT_NAME:
        raise BundleError(f"{path} is not a physai bundle manifest (format={manifest.get('format')!r})")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise BundleError(f"{path} has format_version={version!r}; this runtime reads version {FORMAT_VERSION}: "
                          f"re-export the bundle with this physai version")
    return manifest


def verify_bundle(bundle_dir: str | Path) -> dict[str, Any]:
    """Check the manifest and every file's sha256; return the manifest."""
    bundle_dir = Path(bundle_dir)
    manifest = load_manifest(bundle_dir)
    files = manifest.get("files") or {}
    if POLICY_FILE not in files:
        raise BundleError(f"{bundle_dir / MANIFEST_FILE} lists no checksum for {POLICY_FILE}; re-export the bundle")
    for name, record in files.items():
        path = bundle_dir / name
        if not path.is_file():
            raise BundleError(f"{path} is listed in the manifest but missing; copy the whole bundle directory")
        actual = _sha256(path)
        if actual != record.get("sha256"):
            raise BundleError(f"{path} does not match its manifest checksum (sha256 {actual[:12]}... != "
                              f"{str(record.get('sha256'))[:12]}...): the file was changed or corrupted after "
                              f"export; re-export or re-copy the bundle")
    return manifest
