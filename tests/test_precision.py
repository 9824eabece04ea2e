"""FP16 and INT8 variants: checksummed in the manifest, close to FP32, loadable with numpy + onnxruntime only."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, run_cli
from physai.deploy.precision import VARIANT_FILES, action_parity, to_fp16, to_int8
from physai.edge.runtime import EdgePolicy

# The documented tolerances (export.fp16_tolerance / export.int8_tolerance): max |variant - FP32| action as a
# share of the action range, on the observations the variant meets driving the task.
FP16_TOLERANCE = 0.01
INT8_TOLERANCE = 0.05
# Two-sided 95% Student t quantiles by degrees of freedom, from a printed table.
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228}


@pytest.fixture(scope="module")
def bundle(smoke_run):
    return smoke_run / "bundle"


def test_each_variant_is_written_with_its_checksum_and_figures(bundle, smoke_run):
    manifest = json.loads((bundle / "manifest.json").read_text())
    summary = json.loads((smoke_run / "summary.json").read_text())["bundle"]["variants"]
    for variant, tolerance in (("fp16", FP16_TOLERANCE), ("int8", INT8_TOLERANCE)):
        name = VARIANT_FILES[variant]
        record = manifest["files"][name]
        data = (bundle / name).read_bytes()
        assert record["sha256"] == hashlib.sha256(data).hexdigest() and record["bytes"] == len(data)
        figures = manifest["variants"][variant]
        assert figures["written"] and figures["file"] == name
        assert figures["tolerance_share_of_action_range"] == tolerance
        assert 0 < figures["parity_vs_fp32"]["max_error_share"] <= tolerance
        # The paired change, from the two sets of episode returns as each evaluation recorded them: variant
        # (summary) minus FP32 bundle (manifest), seed by seed, with a t interval over the n differences.
        differences = np.subtract(summary[variant]["eval"]["episode_returns"],
                                  manifest["evaluation"]["episode_returns"])
        n = len(differences)
        half = T95[n - 1] * np.std(differences, ddof=1) / np.sqrt(n)
        change = figures["return_change"]
        assert change["n"] == n
        assert (change["mean"], change["ci95_low"], change["ci95_high"]) == pytest.approx(
            (differences.mean(), differences.mean() - half, differences.mean() + half), rel=1e-6, abs=1e-9)
        assert summary[variant]["eval"]["seeds"] == manifest["evaluation"]["seeds"]  # same seeds as FP32
    assert (bundle / VARIANT_FILES["int8"]).stat().st_size < (bundle / "policy.onnx").stat().st_size
    assert run_cli(["verify", str(bundle)]).returncode == 0  # verify covers the variants too


@pytest.mark.parametrize("variant,tolerance", [("fp16", FP16_TOLERANCE), ("int8", INT8_TOLERANCE)])
def test_variants_act_like_fp32_in_the_runtime_and_from_a_bare_session(bundle, variant, tolerance):
    import onnxruntime as ort

    fp32, policy = EdgePolicy.load(bundle, variant="fp32"), EdgePolicy.load(bundle, variant=variant)
    manifest = fp32.manifest
    obs = np.random.default_rng(3).normal(0, 0.2, size=(64, fp32.obs_dim)).astype(np.float32)
    expected = np.stack([fp32.act(o) for o in obs])
    actual = np.stack([policy.act(o) for o in obs])
    assert actual.dtype == np.float32 and actual.shape == expected.shape
    assert 0 < action_parity(manifest, expected, actual)["max_error_share"] <= tolerance
    # Someone who reads only the manifest: same IO names and dtypes as policy.onnx.
    io_in, io_out = manifest["io"]["inputs"][0], manifest["io"]["outputs"][0]
    session = ort.InferenceSession(str(bundle / VARIANT_FILES[variant]), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == [io_in["name"]]
    assert session.get_inputs()[0].type == "tensor(float)" and session.get_outputs()[0].type == "tensor(float)"
    (bare,) = session.run([io_out["name"]], {io_in["name"]: obs[:1]})
    np.testing.assert_allclose(bare[0], actual[0], atol=1e-6)


def test_a_tampered_variant_is_refused(smoke_run, tmp_path):
    import shutil

    from physai.core.errors import BundleError

    target = tmp_path / "bundle"
    shutil.copytree(smoke_run / "bundle", target)
    data = bytearray((target / VARIANT_FILES["fp16"]).read_bytes())
    data[len(data) // 2] ^= 0x01
    (target / VARIANT_FILES["fp16"]).write_bytes(bytes(data))
    with pytest.raises(BundleError, match="policy_fp16.onnx does not match its manifest checksum"):
        EdgePolicy.load(target, variant="fp16")


def test_static_int8_calibrates_on_observations(bundle):
    fp32 = EdgePolicy.load(bundle, variant="fp32")
    rng = np.random.default_rng(0)
    calibration = rng.normal(0, 0.2, size=(256, fp32.obs_dim)).astype(np.float32)
    data = to_int8((bundle / "policy.onnx").read_bytes(), "static", calibration)
    import onnx
    import onnxruntime as ort

    assert any(node.op_type == "QuantizeLinear" for node in onnx.load_from_string(data).graph.node)
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    held_out = rng.normal(0, 0.2, size=(128, fp32.obs_dim)).astype(np.float32)
    (actual,) = session.run(["action"], {"observation": held_out})
    assert action_parity(fp32.manifest, fp32.act(held_out), actual)["max_error_share"] <= INT8_TOLERANCE


def test_fp16_keeps_a_discrete_policy_int64_and_its_normalization_float32():
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(size=4).astype(np.float32), "mean"),
             numpy_helper.from_array(np.full(4, 2.0, np.float32), "std"),
             numpy_helper.from_array(rng.normal(size=(4, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(np.zeros(3, np.float32), "b")]
    nodes = [helper.make_node("Sub", ["observation", "mean"], ["centered"], name="sub"),
             helper.make_node("Div", ["centered", "std"], ["normed"], name="div"),
             helper.make_node("Gemm", ["normed", "w", "b"], ["logits"], name="gemm"),
             helper.make_node("ArgMax", ["logits"], ["action"], axis=-1, keepdims=0, name="argmax")]
    graph = helper.make_graph(nodes, "discrete", [helper.make_tensor_value_info("observation", TensorProto.FLOAT,
                                                                                ["batch", 4])],
                              [helper.make_tensor_value_info("action", TensorProto.INT64, ["batch"])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    fp32 = model.SerializeToString()
    converted = onnx.load_from_string(to_fp16(fp32))
    sub = next(node for node in converted.graph.node if node.name == "sub")
    assert sub.input[0] == "observation"  # normalization reads the float32 input itself, no cast before it
    gemm_weight = next(init for init in converted.graph.initializer if init.name.startswith("w"))
    assert gemm_weight.data_type == TensorProto.FLOAT16
    obs = rng.normal(size=(200, 4)).astype(np.float32)
    outputs = [ort.InferenceSession(m, providers=["CPUExecutionProvider"]).run(["action"], {"observation": obs})[0]
               for m in (fp32, converted.SerializeToString(), to_int8(fp32))]
    assert all(o.dtype == np.int64 for o in outputs)
    manifest = {"action_space": {"type": "Discrete", "n": 3}}
    assert action_parity(manifest, outputs[0], outputs[1])["differing_action_share"] <= FP16_TOLERANCE


def test_loading_a_variant_imports_only_numpy_and_onnxruntime(bundle):
    probe = ("import sys, numpy as np; from physai.edge.runtime import EdgePolicy; "
             f"p = EdgePolicy.load({str(bundle)!r}, variant='int8'); p.act(np.zeros(p.obs_dim, np.float32)); "
             "allowed = set(sys.stdlib_module_names) | {'numpy', 'onnxruntime', 'physai', 'packaging', "
             "'coloredlogs', 'humanfriendly', 'flatbuffers', 'sympy', 'mpmath', 'google', 'ml_dtypes', "
             "'_distutils_hack'}; "
             "bad = sorted({m.split('.')[0] for m in sys.modules} - allowed - {''}); "
             "bad = [m for m in bad if not m.startswith('_')]; print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_cnn_policy_graph_converts_to_both_variants():
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(np.array([-1, 3, 8, 8], np.int64), "shape"),
             numpy_helper.from_array(np.full(192, 0.5, np.float32), "mean"),
             numpy_helper.from_array(rng.normal(size=(4, 3, 3, 3)).astype(np.float32) * 0.3, "kernel"),
             numpy_helper.from_array(rng.normal(size=(144, 2)).astype(np.float32) * 0.1, "w"),
             numpy_helper.from_array(np.zeros(2, np.float32), "b")]
    nodes = [helper.make_node("Sub", ["observation", "mean"], ["centered"], name="sub"),
             helper.make_node("Reshape", ["centered", "shape"], ["image"], name="reshape"),
             helper.make_node("Conv", ["image", "kernel"], ["conv"], name="conv"),
             helper.make_node("Relu", ["conv"], ["relu"], name="relu"),
             helper.make_node("Flatten", ["relu"], ["flat"], name="flatten"),
             helper.make_node("Gemm", ["flat", "w", "b"], ["pre"], name="gemm"),
             helper.make_node("Tanh", ["pre"], ["action"], name="tanh")]
    graph = helper.make_graph(nodes, "cnn", [helper.make_tensor_value_info("observation", TensorProto.FLOAT,
                                                                           ["batch", 192])],
                              [helper.make_tensor_value_info("action", TensorProto.FLOAT, ["batch", 2])], inits)
    fp32 = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]).SerializeToString()
    obs = rng.uniform(size=(50, 192)).astype(np.float32)
    manifest = {"action_space": {"type": "Box", "low": [-1.0, -1.0], "high": [1.0, 1.0]}}
    expected = ort.InferenceSession(fp32, providers=["CPUExecutionProvider"]).run(["action"], {"observation": obs})[0]
    for data, tolerance in ((to_fp16(fp32), FP16_TOLERANCE), (to_int8(fp32), INT8_TOLERANCE),
                            (to_int8(fp32, "static", obs), INT8_TOLERANCE)):
        actual = ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(["action"], {"observation": obs})[0]
        assert action_parity(manifest, expected, actual)["max_error_share"] <= tolerance
