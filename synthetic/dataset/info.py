"""``physai data info``: what a dataset holds and whether its data file is intact, in words."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from physai.synthetic.dataset.storage import checksum_status, read_metadata


def dataset_info(directory: str | os.PathLike) -> dict[str, Any]:
    """What a dataset holds and whether its data file is intact, from metadata.json plus one checksum pass."""
    directory = Path(directory)
    metadata = read_metadata(directory)
    summary = metadata.get("summary", {})
    provenance = metadata.get("provenance", {})
    return {
        "path": str(directory), "dataset_id": metadata["dataset_id"], "kind": metadata["kind"],
        "task_id": metadata["task_id"], "format_version": metadata["format_version"],
        "minari_version": metadata.get("minari_version"), "created_at": metadata.get("created_at"),
        "observation_space": json.loads(metadata["observation_space"]),
        "action_space": json.loads(metadata["action_space"]),
        "episodes": metadata["total_episodes"], "transitions": metadata["total_steps"],
        "real_episodes": summary.get("real_episodes", 0), "synthetic_episodes": summary.get("synthetic_episodes", 0),
        "real_transitions": summary.get("real_transitions", 0),
        "synthetic_transitions": summary.get("synthetic_transitions", 0),
        "scenario_transitions": summary.get("scenario_transitions", {}),
        "model_transitions": summary.get("model_transitions", {}),
        "uncertainty": summary.get("uncertainty"), "max_branch_depth": summary.get("max_branch_depth", 0),
        "context_names": provenance.get("context_names", []),
        "parent_dataset_id": provenance.get("parent_dataset_id"),
        "generator": metadata.get("generator", {}),
        "checksum": checksum_status(directory, metadata),
    }


def format_dataset_info(info: Mapping[str, Any]) -> str:
    """``dataset_info`` as a two-column table for a terminal."""
    rows: list[tuple[str, str]] = [
        ("dataset", f"{info['dataset_id']}  ({info['kind']})"),
        ("path", info["path"]),
        ("task", info["task_id"]),
        ("observations", _describe_space(info["observation_space"])),
        ("actions", _describe_space(info["action_space"])),
        ("episodes", f"{info['episodes']:,}  (real {info['real_episodes']:,}, "
                     f"synthetic {info['synthetic_episodes']:,})"),
        ("transitions", f"{info['transitions']:,}  (real {info['real_transitions']:,}, "
                        f"synthetic {info['synthetic_transitions']:,})"),
    ]
    if info["context_names"]:
        rows.append(("context", ", ".join(info["context_names"])))
    if info["synthetic_transitions"]:
        rows += _count_rows("scenarios", info["scenario_transitions"])
        rows += _count_rows("models", info["model_transitions"])
        if info["parent_dataset_id"]:
            rows.append(("branched from", info["parent_dataset_id"]))
        rows.append(("branch depth", f"max {info['max_branch_depth']}"))
        stats = info["uncertainty"]
        rows.append(("uncertainty", "not estimated" if not stats else
                     f"min {stats['min']:.4g}  mean {stats['mean']:.4g}  max {stats['max']:.4g}  (n {stats['n']:,})"))
    for key, value in sorted(info["generator"].items()):
        rows.append((f"generator.{key}", value if isinstance(value, str) else json.dumps(value)))
    rows.append(("created", str(info["created_at"])))
    rows.append(("format", f"physai.transitions v{info['format_version']}, Minari {info['minari_version']} layout"))
    checksum = info["checksum"]
    rows.append(("checksum", {"ok": f"ok (sha256 {str(checksum['actual'])[:16]}...)",
                              "missing": f"MISSING: {checksum['file']}",
                              "mismatch": f"MISMATCH: expected {str(checksum['expected'])[:16]}..., "
                                          f"found {str(checksum['actual'])[:16]}..."}[checksum["status"]]))
    width = max(len(label) for label, _ in rows)
    return "\n".join(f"{label:<{width}}  {value}" for label, value in rows)


def _count_rows(label: str, counts: Mapping[str, int]) -> list[tuple[str, str]]:
    if not counts:
        return [(label, "-")]
    total = sum(counts.values())
    return [(label if i == 0 else "", f"{name}: {count:,} transitions ({100 * count / total:.0f}%)")
            for i, (name, count) in enumerate(sorted(counts.items(), key=lambda item: -item[1]))]


def _describe_space(record: Mapping[str, Any]) -> str:
    kind = record["type"]
    if kind == "Box":
        return (f"Box({record['dtype']}, shape {tuple(record['shape'])}, low {_bounds(record['low'])}, "
                f"high {_bounds(record['high'])})")
    if kind == "Discrete":
        return f"Discrete(n {record['n']}, start {record['start']})"
    return json.dumps(record)


def _bounds(values: Any) -> str:
    flat = np.ravel(np.asarray(values, dtype=np.float64))
    if len(flat) and np.all(flat == flat[0]):
        return f"{flat[0]:g}"
    return f"{flat.min():g}..{flat.max():g}" if len(flat) else "-"
