"""Reduced-precision variants of a bundle's policy: FP16 and INT8, each checked against FP32.

``policy.onnx`` (FP32) stays the bundle's policy. The export stage may add beside it

- ``policy_fp16.onnx``: weights and arithmetic in float16, IO kept float32. The observation
  normalization (every node before the first Gemm/MatMul/Conv) stays in float32, because raw
  observations can exceed float16's three significant digits; ops onnxruntime's CPU provider
  has no float16 kernel for stay float32 too.
- ``policy_int8.onnx``: onnxruntime quantization of the Gemm/MatMul weights to int8.
  ``dynamic`` (default) quantizes activations per call from their observed range; ``static``
  fixes activation scales from calibration observations collected in closed-loop rollouts of
  the FP32 policy (seeds disjoint from the evaluation seeds), as TensorRT's INT8 calibration does.

Both take the same input and give the same output as ``policy.onnx`` (names, dtypes, units in the
manifest's ``io``), so a bare ``onnxruntime.InferenceSession`` uses them the same way.

Each variant is judged on the observations it meets when it drives the task on the evaluation
seeds: parity is the max |variant - FP32| action on those observations, as a share of the action
range (for discrete actions, the share of differing actions), and the evaluation-return change is
paired over the same seeds with a 95% CI. A variant whose parity exceeds its tolerance
(``export.fp16_tolerance`` / ``export.int8_tolerance``) is not written; its figures are still recorded.

The edge runtime loads a variant (``EdgePolicy.load(bundle, variant="int8")``, numpy and onnxruntime only);
building one needs ``onnx``.
"""

from __future__ import annotations

import logging
import tempfile
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Iterator, Optional, Sequence

import numpy as np
import onnxruntime as ort

from physai.core.errors import ConfigError
from physai.core.io import write_bytes_atomic, write_json_atomic
from physai.core.manifest import file_record
from physai.core.stats import mean_ci95, paired_ci95
from physai.deploy.gates import score_points
from physai.deploy.parity import random_observations
from physai.edge.bundle import MANIFEST_FILE, POLICY_FILE, VARIANT_FILES, load_manifest
from physai.edge.runtime import EdgePolicy, session_options
from physai.train.evaluation import episode_returns

log = logging.getLogger(__name__)

_COMPUTE_OPS = ("Gemm", "MatMul", "Conv")


# ----- building (needs onnx) -------------------------------------------------------------------------
def _normalization_nodes(model: Any) -> list[str]:
    """Names of the nodes before the first Gemm/MatMul/Conv: the folded observation normalization."""
    names = []
    for node in model.graph.node:
        if node.op_type in _COMPUTE_OPS:
            break
        names.append(node.name)
    return names


def _ensure_node_names(model: Any) -> None:
    for i, node in enumerate(model.graph.node):
        if not node.name:
            node.name = f"{node.op_type}_{i}"


@contextmanager
def _quiet_quantizer() -> Iterator[None]:
    """onnxruntime's quantizer warns on the root logger about optional pre-processing; keep run logs clean."""
    root = logging.getLogger()
    previous = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(previous)


def _missing_kernel(exc: Exception) -> Optional[str]:
    """The op type named by onnxruntime's "Could not find an implementation for Op(version) node" error."""
    text = str(exc)
    marker = "implementation for "
    if marker not in text:
        return None
    return text.split(marker, 1)[1].split("(", 1)[0].strip()


def _drop_input_round_trips(model: Any) -> None:
    """Feed float32 graph inputs straight to the nodes kept in float32.

    ``convert_float_to_float16(keep_io_types=True)`` casts each input to float16 and, for a node kept
    in float32, back again: the raw observation would lose precision before its normalization.
    """
    from onnx import TensorProto

    inputs = {value.name for value in model.graph.input}
    producer = {out: node for node in model.graph.node for out in node.output}

    def cast_to(node: Any) -> Optional[int]:
        return next((a.i for a in node.attribute if a.name == "to"), None) if node.op_type == "Cast" else None

    replace = {}
    for node in model.graph.node:
        if cast_to(node) == TensorProto.FLOAT:
            source = producer.get(node.input[0])
            if source is not None and cast_to(source) == TensorProto.FLOAT16 and source.input[0] in inputs:
                replace[node.output[0]] = source.input[0]
    for node in model.graph.node:
        for i, name in enumerate(node.input):
            if name in replace:
                node.input[i] = replace[name]
    used = {name for node in model.graph.node for name in node.input} | {v.name for v in model.graph.output}
    for _ in range(2):  # the back-casts first, then a forward cast nothing reads any more
        dead = [node for node in model.graph.node if node.op_type == "Cast" and node.output[0] not in used]
        for node in dead:
            model.graph.node.remove(node)
        used = {name for node in model.graph.node for name in node.input} | {v.name for v in model.graph.output}


def _fp16_tail(model: Any, blocked_ops: list[str]) -> Any:
    """The graph with every node from the first Gemm/MatMul/Conv on in float16, the normalization before it
    (and its constants) untouched in float32, and float32 graph inputs and outputs."""
    import onnx
    from onnx import TensorProto, helper
    from onnxruntime.transformers.float16 import convert_float_to_float16

    head_names = set(_normalization_nodes(model))
    head = [node for node in model.graph.node if node.name in head_names]
    tail = [node for node in model.graph.node if node.name not in head_names]
    if not head:
        converted = convert_float_to_float16(model, keep_io_types=True, op_block_list=blocked_ops)
        _drop_input_round_trips(converted)
        return converted
    produced = {out for node in head for out in node.output} | {value.name for value in model.graph.input}
    boundary = list(dict.fromkeys(name for node in tail for name in node.input if name in produced))
    tail_reads = {name for node in tail for name in node.input}
    head_reads = {name for node in head for name in node.input}
    tail_model = helper.make_model(
        helper.make_graph(tail, "policy_tail", [helper.make_tensor_value_info(n, TensorProto.FLOAT, None)
                                                for n in boundary],
                          list(model.graph.output), [i for i in model.graph.initializer if i.name in tail_reads]),
        opset_imports=list(model.opset_import))
    tail_model = convert_float_to_float16(tail_model, keep_io_types=True, op_block_list=blocked_ops)
    _drop_input_round_trips(tail_model)
    head_inits = [i for i in model.graph.initializer if i.name in head_reads]
    clashes = {i.name for i in head_inits} & {i.name for i in tail_model.graph.initializer}
    for init in tail_model.graph.initializer:  # a constant both halves read: the tail gets its own fp16 copy
        if init.name in clashes:
            init.name = f"{init.name}_fp16"
    for node in tail_model.graph.node:
        for i, name in enumerate(node.input):
            if name in clashes:
                node.input[i] = f"{name}_fp16"
    graph = helper.make_graph(_topological(head + list(tail_model.graph.node)), model.graph.name,
                              list(model.graph.input),
                              list(tail_model.graph.output), head_inits + list(tail_model.graph.initializer))
    merged = helper.make_model(graph, opset_imports=list(tail_model.opset_import), ir_version=model.ir_version,
                               producer_name="physai.deploy.precision")
    onnx.checker.check_model(merged)
    return merged


def _topological(nodes: list) -> list:
    """The nodes reordered so each comes after the nodes producing its inputs (the converter appends its casts)."""
    producer = {out: i for i, node in enumerate(nodes) for out in node.output}
    ordered, placed, visiting = [], set(), set()

    def place(i: int) -> None:
        if i in placed:
            return
        if i in visiting:
            raise RuntimeError("the float16 graph has a cycle")
        visiting.add(i)
        for name in nodes[i].input:
            if name in producer:
                place(producer[name])
        placed.add(i)
        ordered.append(nodes[i])

    for i in range(len(nodes)):
        place(i)
    return ordered


def to_fp16(fp32_bytes: bytes) -> bytes:
    """Float16 weights and arithmetic, float32 IO and normalization; returns the serialized model."""
    import onnx
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST

    blocked_ops = list(DEFAULT_OP_BLOCK_LIST)
    for _ in range(20):
        model = onnx.load_from_string(fp32_bytes)
        _ensure_node_names(model)
        data = _fp16_tail(model, blocked_ops).SerializeToString()
        try:
            ort.InferenceSession(data, sess_options=session_options(), providers=["CPUExecutionProvider"])
            return data
        except Exception as exc:  # onnxruntime raises its own exception types
            op = _missing_kernel(exc)
            if op is None or op in blocked_ops:
                raise
            log.info("fp16 variant: onnxruntime's CPU provider has no float16 %s kernel; keeping %s in float32",
                     op, op)
            blocked_ops.append(op)
    raise RuntimeError("fp16 conversion did not converge on a runnable graph")


def _calibration_feeds(calibration: Any, input_name: str) -> Iterator[dict[str, np.ndarray]]:
    """One feed per calibration call: a row of an array (n, ...) as the graph's first input, or a dict of
    named inputs (a camera policy's frames and state) as they are, each given a batch axis."""
    if isinstance(calibration, np.ndarray) or not isinstance(calibration[0], dict):
        rows = np.asarray(calibration, dtype=np.float32)
        return ({input_name: rows[i:i + 1]} for i in range(len(rows)))
    return ({name: np.asarray(value)[None] for name, value in obs.items()} for obs in calibration)


def to_int8(fp32_bytes: bytes, method: str = "dynamic", calibration: Optional[Any] = None) -> bytes:
    """INT8 weights via onnxruntime quantization; ``static`` needs ``calibration`` inputs, one per call: an
    array (n, ...) for a graph of one input, or a list of dicts of named inputs."""
    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic,
                                          quantize_static)

    if method not in ("dynamic", "static"):
        raise ConfigError(f"export.int8_method={method!r} is not known; use dynamic or static")
    model = onnx.load_from_string(fp32_bytes)
    _ensure_node_names(model)
    excluded = _normalization_nodes(model)
    with tempfile.TemporaryDirectory(prefix="physai-int8-") as tmp, _quiet_quantizer():
        target = Path(tmp) / "int8.onnx"
        if method == "dynamic":
            # Conv stays float: ConvInteger has no kernel for int8 weights on onnxruntime's CPU provider.
            quantize_dynamic(model, target, weight_type=QuantType.QInt8, op_types_to_quantize=["Gemm", "MatMul"],
                             nodes_to_exclude=excluded)
        else:
            if calibration is None or len(calibration) == 0:
                raise ValueError("static INT8 quantization needs calibration observations")
            feeds = _calibration_feeds(calibration, model.graph.input[0].name)

            class Reader(CalibrationDataReader):
                def get_next(self) -> Optional[dict]:
                    return next(feeds, None)

            quantize_static(model, target, Reader(), quant_format=QuantFormat.QDQ, activation_type=QuantType.QInt8,
                            weight_type=QuantType.QInt8, op_types_to_quantize=list(_COMPUTE_OPS),
                            nodes_to_exclude=excluded)
        return target.read_bytes()


# ----- judging -----------------------------------------------------------------------------------------
def action_parity(manifest: dict, expected: np.ndarray, actual: np.ndarray) -> dict[str, float]:
    """|variant - FP32| on the same observations; for Box actions also as a share of the action range."""
    space = manifest["action_space"]
    if space["type"] == "Discrete":
        differ = np.asarray(expected).ravel() != np.asarray(actual).ravel()
        return {"samples": int(differ.size), "differing_action_share": float(differ.mean()),
                "max_error_share": float(differ.mean())}
    error = np.abs(np.asarray(actual, np.float64) - np.asarray(expected, np.float64)).reshape(len(expected), -1)
    low = np.array([np.nan if v is None else v for v in space["low"]], dtype=np.float64)
    high = np.array([np.nan if v is None else v for v in space["high"]], dtype=np.float64)
    span = high - low
    span = np.where(np.isfinite(span) & (span > 0), span, 1.0)  # unbounded: the share is the absolute error
    return {"samples": int(error.shape[0]), "max_abs_error": float(error.max()),
            "mean_abs_error": float(error.mean()), "max_error_share": float((error / span).max())}


def _rollouts(task: Any, act: Callable[[Any], np.ndarray], seeds: Sequence[int],
              record: Optional[list] = None) -> list[float]:
    """``physai.train.evaluation.episode_returns`` that also keeps every observation the policy was given
    (float32 rows, or for a camera policy dicts of its frames and state)."""
    if record is None:
        return episode_returns(task, act, seeds)

    def recording(obs: Any) -> np.ndarray:
        if isinstance(obs, dict):
            record.append({name: np.array(value, copy=True) for name, value in obs.items()})
        else:
            record.append(np.array(obs, dtype=np.float32, copy=True))
        return act(obs)

    return episode_returns(task, recording, seeds)


def calibration_seeds(evaluation_seeds: Sequence[int], n: int) -> list[int]:
    """Seeds after the evaluation block: never one of the evaluation seeds."""
    start = max(evaluation_seeds) + 1 if evaluation_seeds else 0
    return list(range(start + 5000, start + 5000 + n))


def judge_variant(bundle_dir: Path, variant: str, fp32: EdgePolicy, task: Any, seeds: Sequence[int],
                  fp32_eval: dict, tolerance: float, max_parity_samples: int = 5000) -> dict[str, Any]:
    """Drive the task with the variant on the FP32 evaluation's seeds; compare actions and returns."""
    policy = EdgePolicy.load(bundle_dir, variant=variant, intra_op_threads=1, inter_op_threads=1)
    seen: list[Any] = []
    returns = _rollouts(task, policy.act, seeds, record=seen)
    observations = seen
    if len(observations) > max_parity_samples:
        pick = np.random.default_rng(0).choice(len(observations), max_parity_samples, replace=False)
        observations = [observations[i] for i in np.sort(pick)]
    # One observation per call, as the robot runs it: dynamic INT8 scales depend on the whole batch.
    parity = action_parity(fp32.manifest, np.stack([fp32.act(o) for o in observations]),
                           np.stack([policy.act(o) for o in observations]))
    parity["observations"] = "met by the variant driving the task on the evaluation seeds"
    random_obs = _random_observations(fp32.manifest, random_observations, len(observations))
    wide = None if random_obs is None else action_parity(
        fp32.manifest, np.stack([fp32.act(o) for o in random_obs]), np.stack([policy.act(o) for o in random_obs]))
    reference = fp32_eval["episode_returns"]
    changes = paired_ci95(returns, reference)
    threshold = fp32_eval.get("solved_threshold")

    def points(value: float) -> float:
        return score_points(value, threshold, fp32_eval["mean_return"])

    point_changes = mean_ci95([points(v) - points(r) for v, r in zip(returns, reference)])
    return {
        "file": VARIANT_FILES[variant], "tolerance_share_of_action_range": tolerance,
        "within_tolerance": bool(parity["max_error_share"] <= tolerance),
        "parity_vs_fp32": parity, "parity_vs_fp32_random_observations": wide,
        "eval": {"mean_return": float(np.mean(returns)), "episode_returns": [float(r) for r in returns],
                 "seeds": [int(s) for s in seeds], "n_episodes": len(returns)},
        "return_change": {"mean": changes["mean"], "ci95_low": changes["ci95_low"],
                          "ci95_high": changes["ci95_high"], "n": changes["n"],
                          "points": point_changes["mean"], "points_ci95": [point_changes["ci95_low"],
                                                                           point_changes["ci95_high"]],
                          "paired": "variant minus FP32 bundle, same seeds"},
    }


def _random_observations(manifest: dict, sampler: Callable, n: int) -> Optional[np.ndarray]:
    """Samples of the Box observation space the manifest describes (null bounds are unbounded)."""
    space = manifest["observation_space"]
    if space.get("type") != "Box":
        return None
    shape = tuple(space["shape"])
    bounds = {side: np.array([default if v is None else v for v in space[side]], dtype=np.float64).reshape(shape)
              for side, default in (("low", -np.inf), ("high", np.inf))}
    return sampler(SimpleNamespace(shape=shape, **bounds), n, seed=0).reshape(n, -1)


def add_variants(bundle_dir: Path, task: Any, fp32: EdgePolicy, seeds: Sequence[int], fp32_eval: dict,
                 export_cfg: Any) -> dict[str, Any]:
    """Write the configured variants into ``bundle_dir`` (a staging bundle), judge each, update the manifest.

    A variant beyond its parity tolerance is removed again; its figures stay in ``variants``.
    Returns the manifest's ``variants`` section.
    """
    wanted = [v for v, on in (("fp16", export_cfg.get("fp16_variant", True)),
                              ("int8", export_cfg.get("int8_variant", True))) if on]
    if not wanted:
        return {}
    fp32_bytes = (bundle_dir / POLICY_FILE).read_bytes()
    results: dict[str, Any] = {}
    for variant in wanted:
        name = VARIANT_FILES[variant]
        if variant == "fp16":
            data, how = to_fp16(fp32_bytes), {"method": "float16 weights and arithmetic; float32 IO and normalization"}
            tolerance = float(export_cfg.get("fp16_tolerance", 0.01))
        else:
            method = str(export_cfg.get("int8_method", "dynamic"))
            calibration = None
            quantized = "Gemm/MatMul weights" if method == "dynamic" else "Conv/Gemm/MatMul weights and activations (QDQ)"
            how: dict[str, Any] = {"method": f"onnxruntime {method} quantization, int8 {quantized}"}
            if method == "static":
                calib_seeds = calibration_seeds(seeds, int(export_cfg.get("int8_calibration_episodes", 5)))
                seen: list[Any] = []
                _rollouts(task, fp32.act, calib_seeds, record=seen)
                calibration = seen if isinstance(seen[0], dict) else np.stack(seen)
                how.update(calibration_seeds=calib_seeds, calibration_observations=int(len(calibration)))
            data = to_int8(fp32_bytes, method, calibration)
            tolerance = float(export_cfg.get("int8_tolerance", 0.05))
        write_bytes_atomic(bundle_dir / name, data)
        manifest = load_manifest(bundle_dir)
        manifest["files"][name] = file_record(bundle_dir / name)
        write_json_atomic(bundle_dir / MANIFEST_FILE, manifest)
        figures = {**how, **judge_variant(bundle_dir, variant, fp32, task, seeds, fp32_eval, tolerance),
                   "bytes": len(data), "sha256": manifest["files"][name]["sha256"]}
        figures["written"] = figures["within_tolerance"]
        if not figures["written"]:
            log.warning("%s variant differs from FP32 by %.3g of the action range (> tolerance %.3g): not written",
                        variant, figures["parity_vs_fp32"]["max_error_share"], tolerance)
            manifest = load_manifest(bundle_dir)
            manifest["files"].pop(name, None)
            write_json_atomic(bundle_dir / MANIFEST_FILE, manifest)
            (bundle_dir / name).unlink()
        else:
            log.info("%s variant: max action error %.3g of the action range; return change %+.3g [%.3g, %.3g]",
                     variant, figures["parity_vs_fp32"]["max_error_share"], figures["return_change"]["mean"],
                     figures["return_change"]["ci95_low"], figures["return_change"]["ci95_high"])
        results[variant] = figures
    manifest = load_manifest(bundle_dir)
    manifest["variants"] = {
        "reference": {"file": POLICY_FILE, "precision": "fp32"},
        **{v: {key: f[key] for key in ("file", "written", "method", "tolerance_share_of_action_range",
                                        "parity_vs_fp32", "return_change")} for v, f in results.items()}}
    write_json_atomic(bundle_dir / MANIFEST_FILE, manifest)
    return results
