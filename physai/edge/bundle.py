"""The bundle format: ``policy.onnx`` + ``manifest.json`` with a sha256 for every file.

A bundle is refused before any session is created if its manifest is missing, of another
format version, or if any file differs from its recorded checksum.

Optional parts, all additive to format version 1 (a runtime that does not know them reads the
policy exactly as before): ``observation_statistics`` (mean/std/min/max of what the policy saw
in the export stage's closed-loop evaluation), ``guard`` (monitor settings and the fallback
controller, see physai.edge.guard), ``runtime`` (thread settings), ``world_model`` with its
file ``world_model.onnx`` (the dynamics ensemble, for the guard's disagreement monitor), and
``variants`` with ``policy_fp16.onnx`` / ``policy_int8.onnx`` (reduced-precision graphs).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from physai.core.errors import BundleError, ConfigError
from physai.core.manifest import listed_path, read_json_object, verify_bytes

FORMAT_NAME = "physai.bundle"
FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"
POLICY_FILE = "policy.onnx"
BUNDLE_FIX = "re-export the bundle, or copy the whole bundle directory again"
INPUT_NAME = "observation"
OUTPUT_NAME = "action"
# Optional: the world-model ensemble, for the guard's disagreement monitor (see physai.edge.guard).
WORLD_MODEL_FILE = "world_model.onnx"
WORLD_MODEL_INPUTS = ("observation", "action")
WORLD_MODEL_OUTPUTS = ("member_mean_deltas", "disagreement")
# Optional: reduced-precision graphs beside policy.onnx, same inputs and outputs (see physai.deploy.precision).
VARIANT_FILES = {"fp32": POLICY_FILE, "fp16": "policy_fp16.onnx", "int8": "policy_int8.onnx"}


def describe_space(space: Any, names: list[str]) -> dict[str, Any]:
    """A JSON description of a gymnasium Box or Discrete space (duck-typed: no gymnasium import here).

    Unbounded Box limits are written as null: standard JSON has no infinity.
    """
    if hasattr(space, "n") and not hasattr(space, "low"):
        return {"type": "Discrete", "n": int(space.n), "names": names}

    def bounds(values: Any) -> list[Any]:
        return [float(v) if np.isfinite(v) else None for v in np.asarray(values, dtype=np.float64).ravel()]

    return {"type": "Box", "shape": list(space.shape), "dtype": str(np.dtype(space.dtype)),
            "low": bounds(space.low), "high": bounds(space.high), "names": names}


def variant_file(variant: str) -> str:
    """The file of a bundle's policy at a precision: ``policy.onnx`` for fp32, ``policy_<variant>.onnx`` else."""
    if variant not in VARIANT_FILES:
        raise ConfigError(f"unknown variant {variant!r}; known variants: {sorted(VARIANT_FILES)}")
    return VARIANT_FILES[variant]


def available_variants(manifest: dict[str, Any]) -> list[str]:
    """The precisions a bundle holds a policy graph for (the FP16/INT8 that passed their parity check)."""
    files = manifest.get("files") or {}
    return [name for name, file in VARIANT_FILES.items() if file in files]


def takes_named_inputs(manifest: dict[str, Any]) -> bool:
    """Whether a bundle's policy reads several named inputs (a camera policy) instead of one observation."""
    inputs = (manifest.get("io") or {}).get("inputs") or []
    return len(inputs) != 1 or inputs[0].get("name") != INPUT_NAME


def describe_inputs(space: Any, names: list[str]) -> dict[str, Any]:
    """A JSON description of a gymnasium Dict observation space (duck-typed), one entry per named input;
    an image's bounds are written once (0-255), not per pixel."""
    def describe(key: str, part: Any) -> dict[str, Any]:
        if np.dtype(part.dtype) == np.uint8:
            return {"type": "Box", "shape": list(part.shape), "dtype": "uint8", "low": 0, "high": 255}
        return describe_space(part, names if key == "state" else [])

    return {"type": "Dict", "spaces": {key: describe(key, part) for key, part in space.spaces.items()}}


def load_manifest(bundle_dir: str | Path) -> dict[str, Any]:
    bundle_dir = Path(bundle_dir)
    path = bundle_dir / MANIFEST_FILE
    manifest = read_json_object(path, error=BundleError, fix="re-export the bundle",
                                missing=f"{path} does not exist: point at a bundle directory written by the export "
                                        f"stage (it holds {MANIFEST_FILE} and {POLICY_FILE})")
    if manifest.get("format") != FORMAT_NAME:
        raise BundleError(f"{path} is not a physai bundle manifest (format={manifest.get('format')!r})")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise BundleError(f"{path} has format_version={version!r}; this runtime reads version {FORMAT_VERSION}: "
                          f"re-export the bundle with this physai version")
    return manifest


def read_verified_bundle(bundle_dir: str | Path) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The manifest and the bytes of every file it lists, each checked against its sha256.

    Callers use these bytes rather than reopening the files, so what was checked is what runs.
    """
    bundle_dir = Path(bundle_dir)
    manifest = load_manifest(bundle_dir)
    files = manifest.get("files") or {}
    if POLICY_FILE not in files:
        raise BundleError(f"{bundle_dir / MANIFEST_FILE} lists no checksum for {POLICY_FILE}; re-export the bundle")
    contents = {name: verify_bytes(listed_path(bundle_dir, name, error=BundleError, manifest=MANIFEST_FILE), record,
                                   error=BundleError, manifest=MANIFEST_FILE, fix=BUNDLE_FIX)
                for name, record in files.items()}
    return manifest, contents


def verify_bundle(bundle_dir: str | Path) -> dict[str, Any]:
    """Check the manifest and every file's sha256; return the manifest."""
    return read_verified_bundle(bundle_dir)[0]


def onnx_opsets(model: bytes) -> dict[str, int]:
    """``{domain: version}`` of an ONNX model's ``opset_import``, read straight from the protobuf bytes.

    A few lines of wire-format parsing instead of the ``onnx`` package, which the robot does not
    need: ModelProto field 8 is a repeated OperatorSetIdProto (1: domain string, 2: version).
    An unparsable file gives ``{}``; onnxruntime then says what is wrong with it.
    """
    try:
        opsets = {}
        for field, value in _proto_fields(model):
            if field == 8 and isinstance(value, bytes):
                entry = dict(_proto_fields(value))
                domain = entry.get(1, b"")
                opsets[domain.decode("utf-8") if isinstance(domain, bytes) else ""] = int(entry.get(2, 0))
        return opsets
    except (ValueError, IndexError, UnicodeDecodeError):
        return {}


def _proto_fields(data: bytes):
    """(field number, value) of one protobuf message: varints as int, length-delimited as bytes."""
    pos, end = 0, len(data)

    def varint() -> int:
        nonlocal pos
        shift = result = 0
        while True:
            byte = data[pos]
            pos += 1
            result |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return result
            shift += 7
            if shift > 63:
                raise ValueError("varint too long")

    while pos < end:
        key = varint()
        field, wire = key >> 3, key & 7
        if wire == 0:
            yield field, varint()
        elif wire == 1:
            pos += 8
        elif wire == 2:
            size = varint()
            if pos + size > end:
                raise ValueError("truncated field")
            yield field, data[pos:pos + size]
            pos += size
        elif wire == 5:
            pos += 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
