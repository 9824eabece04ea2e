"""Bundles are verified before use; the edge runtime checks its input and never imports training code."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, run_cli
from physai.edge import EdgePolicy, verify_bundle
from physai.core.errors import BundleError


@pytest.fixture()
def bundle(smoke_run, tmp_path):
    target = tmp_path / "bundle"
    shutil.copytree(smoke_run / "bundle", target)
    return target


def test_a_bundle_with_one_changed_byte_is_refused(bundle):
    path = bundle / "policy.onnx"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="policy.onnx does not match its manifest checksum"):
        EdgePolicy.load(bundle)
    result = run_cli(["verify", str(bundle)])
    assert result.returncode == 2 and "re-export" in result.stderr


def test_a_manifest_of_another_format_version_is_refused(bundle):
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["format_version"] = 99
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="format_version=99"):
        verify_bundle(bundle)


def test_a_missing_policy_file_is_named(bundle):
    (bundle / "policy.onnx").unlink()
    with pytest.raises(BundleError, match="policy.onnx is listed in the manifest manifest.json but missing"):
        verify_bundle(bundle)


def test_a_truncated_policy_file_is_refused(bundle):
    path = bundle / "policy.onnx"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(BundleError, match="policy.onnx does not match its manifest checksum"):
        EdgePolicy.load(bundle)


def test_a_truncated_manifest_is_refused(bundle):
    path = bundle / "manifest.json"
    path.write_text(path.read_text()[:100])
    with pytest.raises(BundleError, match="not valid JSON"):
        EdgePolicy.load(bundle)


def test_an_opset_the_runtime_cannot_run_is_refused_with_the_opset_named(bundle):
    import hashlib

    import onnx

    model = onnx.load(str(bundle / "policy.onnx"))
    model.opset_import[0].version = 99
    data = model.SerializeToString()
    (bundle / "policy.onnx").write_bytes(data)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["files"]["policy.onnx"] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=r"cannot run .*policy.onnx \(ai.onnx opset 99\).*export.opset"):
        EdgePolicy.load(bundle)


def test_opsets_are_read_without_the_onnx_package(bundle):
    from physai.edge.bundle import onnx_opsets

    assert onnx_opsets((bundle / "policy.onnx").read_bytes()) == {"": 18}
    assert onnx_opsets(b"not a model") == {}


def test_single_and_batch_calls_agree_and_return_fresh_arrays(bundle):
    policy = EdgePolicy.load(bundle)
    obs = np.random.default_rng(0).normal(size=(4, policy.obs_dim)).astype(np.float32)
    batch = policy.act(obs)
    singles = [policy.act(row) for row in obs]
    np.testing.assert_array_equal(np.stack(singles), batch)
    assert not np.shares_memory(singles[0], singles[1])  # the output buffer is reused, results are not
    np.testing.assert_array_equal(policy.act(obs[0].astype(np.float64)), singles[0])
    np.testing.assert_array_equal(policy.act(list(obs[0])), singles[0])
    assert policy.act(obs[:0]).shape == (0, *policy.action_shape)
    with pytest.raises(BundleError, match=r"rows \[2\]"):
        policy.act(np.where(np.arange(4)[:, None] == 2, np.inf, obs))


def test_thread_settings_come_from_the_manifest_unless_given(bundle):
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["runtime"] = {"intra_op_threads": 2, "inter_op_threads": 1}
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    assert EdgePolicy.load(bundle).intra_op_threads == 2
    assert EdgePolicy.load(bundle, intra_op_threads=1).intra_op_threads == 1


def test_act_checks_shape_dtype_and_finiteness(bundle):
    policy = EdgePolicy.load(bundle)
    n = policy.obs_dim
    with pytest.raises(BundleError, match="shape"):
        policy.act(np.zeros(n + 1, dtype=np.float32))
    with pytest.raises(BundleError, match="non-finite"):
        policy.act(np.array([0.0, np.nan] + [0.0] * (n - 2), dtype=np.float32))
    with pytest.raises(BundleError, match="dtype"):
        policy.act(np.array(["a"] * n))
    assert policy.act(np.zeros(n, dtype=np.float64)).shape == (1,)


def test_bare_onnxruntime_can_use_a_bundle_from_its_manifest(bundle):
    import onnxruntime as ort

    manifest = json.loads((bundle / "manifest.json").read_text())
    session = ort.InferenceSession(str(bundle / "policy.onnx"), providers=["CPUExecutionProvider"])
    io_in, io_out = manifest["io"]["inputs"][0], manifest["io"]["outputs"][0]
    obs = np.zeros((3, io_in["shape"][1]), dtype=np.float32)
    (action,) = session.run([io_out["name"]], {io_in["name"]: obs})
    np.testing.assert_allclose(action, EdgePolicy.load(bundle).act(obs), atol=0)


def test_edge_runtime_imports_only_numpy_onnxruntime_and_the_standard_library(bundle):
    # An allowlist, so any new third-party import in the runtime's graph fails this test. The guard
    # and every fallback controller are in the graph too: they run on the robot.
    probe = ("import sys, numpy as np; from physai.edge import EdgePolicy; "
             "from physai.edge.guard import GuardedPolicy; from physai.edge import fallback; "
             f"p = EdgePolicy.load({str(bundle)!r}); p.act(np.zeros(p.obs_dim, np.float32)); "
             f"g = GuardedPolicy.from_bundle({str(bundle)!r}); g.act(np.full(p.obs_dim, np.nan)); "
             "g.act(np.zeros((3, p.obs_dim))); "
             "allowed = set(sys.stdlib_module_names) | {'numpy', 'onnxruntime', 'physai', 'packaging', "
             "'coloredlogs', 'humanfriendly', 'flatbuffers', 'sympy', 'mpmath', 'google', 'ml_dtypes', '_distutils_hack'}; "
             "bad = sorted({m.split('.')[0] for m in sys.modules} - allowed - {''}); "
             "bad = [m for m in bad if not m.startswith('_')]; print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("width", [5, 40])  # Python's sum for short rows, a dot product for long ones
def test_the_single_observation_path_refuses_every_non_finite_value(tmp_path, width):
    from physai.deploy.devices.microbench import _write_bundle, chain_model

    _write_bundle(tmp_path / "b", chain_model(2, width), width)
    policy = EdgePolicy.load(tmp_path / "b")
    for bad in (np.nan, np.inf, -np.inf):
        obs = np.zeros(width, dtype=np.float32)
        obs[width - 1] = bad
        with pytest.raises(BundleError, match=rf"index \[{width - 1}\]"):
            policy.act(obs)
    both = np.zeros(width, dtype=np.float32)
    both[:2] = (np.inf, -np.inf)  # their sum is NaN, not zero
    with pytest.raises(BundleError, match=r"index \[0, 1\]"):
        policy.act(both)
    with pytest.raises(BundleError, match="non-finite"):
        policy.act(np.full(width, 1e39))  # finite in float64, inf once cast to float32
    # The largest float32 in every column is finite: no overflow in the check refuses it.
    huge = np.full(width, np.finfo(np.float32).max, dtype=np.float32)
    assert policy.act(huge).shape == (width,)
