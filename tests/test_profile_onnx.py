"""`physai profile --onnx`: any ONNX file measured on this host and modeled on every device, conv nets included."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from omegaconf import OmegaConf
from onnx import TensorProto, helper, numpy_helper

from conftest import run_cli
from physai.config.schema import DeviceConfig
from physai.core.errors import ConfigError
from physai.deploy.devices.onnx_cost import graph_costs, input_shapes, kernel_groups, runtime_kernel_count
from physai.deploy.devices.roofline import cpu_bandwidth_gbs, gpu_peak_gflops, load_device, model_device
from physai.deploy.latency import BoundSession
from physai.deploy.profiling import PRECISIONS, fastest_path, host_graph, profile_onnx
from physai.run.cli import main

GPU_DEVICES = ("jetson_orin_nano", "jetson_orin_nano_super", "jetson_agx_orin_64gb", "jetson_agx_thor", "h100_sxm",
               "b200", "rubin")


def _weights(rng: np.random.Generator, name: str, *shape: int) -> onnx.TensorProto:
    return numpy_helper.from_array((rng.normal(size=shape) * 0.1).astype(np.float32), name)


def _conv_net(batch: int | str = "batch", size: int | str = 16) -> onnx.ModelProto:
    """pixels[b, 3, 16, 16] -> Conv 3x3 (8) + BN + Relu -> MaxPool 2x2 -> Conv 3x3/2 (16) + Relu -> GAP -> Gemm (4)."""
    rng = np.random.default_rng(0)
    inits = [_weights(rng, "w1", 8, 3, 3, 3), _weights(rng, "b1", 8), _weights(rng, "scale", 8),
             _weights(rng, "shift", 8), _weights(rng, "mean", 8),
             numpy_helper.from_array(np.ones(8, np.float32), "var"),
             _weights(rng, "w2", 16, 8, 3, 3), _weights(rng, "b2", 16), _weights(rng, "fc", 16, 4),
             _weights(rng, "fc_b", 4)]
    nodes = [helper.make_node("Conv", ["pixels", "w1", "b1"], ["c1"], pads=[1] * 4, name="conv1"),
             helper.make_node("BatchNormalization", ["c1", "scale", "shift", "mean", "var"], ["bn"], name="bn"),
             helper.make_node("Relu", ["bn"], ["r1"], name="relu1"),
             helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2], name="pool"),
             helper.make_node("Conv", ["p1", "w2", "b2"], ["c2"], pads=[1] * 4, strides=[2, 2], name="conv2"),
             helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
             helper.make_node("GlobalAveragePool", ["r2"], ["gap"], name="gap"),
             helper.make_node("Flatten", ["gap"], ["flat"], name="flatten"),
             helper.make_node("Gemm", ["flat", "fc", "fc_b"], ["features"], name="fc")]
    graph = helper.make_graph(nodes, "conv_net",
                              [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, [batch, 3, size, size])],
                              [helper.make_tensor_value_info("features", TensorProto.FLOAT, [batch, 4])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def _residual_net() -> onnx.ModelProto:
    """A residual block with a Clip-capped conv and an Identity on a weight (folded when the session is built)."""
    rng = np.random.default_rng(1)
    inits = [_weights(rng, "w1", 8, 8, 3, 3), _weights(rng, "w2", 8, 8, 3, 3),
             numpy_helper.from_array(np.array(0.0, np.float32), "lo"),
             numpy_helper.from_array(np.array(6.0, np.float32), "hi")]
    nodes = [helper.make_node("Identity", ["w1"], ["w1_copy"], name="weight_copy"),
             helper.make_node("Conv", ["x", "w1_copy"], ["c1"], pads=[1] * 4, name="conv1"),
             helper.make_node("Clip", ["c1", "lo", "hi"], ["r1"], name="relu6"),
             helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1] * 4, name="conv2"),
             helper.make_node("Add", ["c2", "x"], ["sum"], name="residual"),
             helper.make_node("Relu", ["sum"], ["y"], name="relu")]
    graph = helper.make_graph(nodes, "residual", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 8, 8])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


@pytest.fixture(scope="module")
def conv_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("onnx") / "conv_net.onnx"
    onnx.save(_conv_net(), str(path))
    return path


def test_conv_net_flops_and_bytes_worked_by_hand():
    costs = {c.name: c for c in graph_costs(_conv_net(), batch=1)}
    # conv1: 8 x 16 x 16 = 2,048 outputs, each 3 x 3 x 3 = 27 multiply-adds, plus a bias add: 2 x 2,048 x 27 + 2,048.
    # It reads 3 x 16 x 16 + 216 weights + 8 biases and writes 2,048 floats: 3,040 x 4 B.
    assert (costs["conv1"].flops, costs["conv1"].bytes) == (112_640, 12_160)
    assert costs["bn"].flops == 2 * 2048  # scale and shift per element
    assert costs["pool"].flops == 8 * 8 * 8 * 4  # 512 outputs, a 2 x 2 window each
    # conv2, stride 2 on 8 x 8: 16 x 4 x 4 = 256 outputs of 8 x 3 x 3 = 72 multiply-adds each, plus the bias.
    assert costs["conv2"].flops == 2 * 256 * 72 + 256
    assert costs["gap"].flops == 256 and costs["fc"].flops == 2 * 16 * 4 + 4
    assert (costs["flatten"].flops, costs["flatten"].bytes) == (0, 0)  # a view: nothing moves
    # At batch 8 the arithmetic is 8x; the weights are read once per call, so the bytes grow less than 8x.
    big = {c.name: c for c in graph_costs(_conv_net(), batch=8)}
    assert big["conv1"].flops == 8 * costs["conv1"].flops
    assert costs["conv1"].bytes < big["conv1"].bytes < 8 * costs["conv1"].bytes


def test_conv_kernels_match_onnxruntime_and_tensorrt_fuses_the_residual(tmp_path):
    for name, model in (("conv", _conv_net()), ("residual", _residual_net())):
        path = tmp_path / f"{name}.onnx"
        onnx.save(model, str(path))
        costs = graph_costs(model, batch=1)
        assert len(set(kernel_groups(costs, "onnxruntime"))) == runtime_kernel_count(path), name
    costs = graph_costs(_residual_net(), batch=1)
    # The Identity on a weight is folded away; conv1 + Clip is one FusedConv; conv2, Add and Relu three kernels
    # for onnxruntime, one for TensorRT (the residual Add and the Relu ride in conv2's epilogue).
    assert [c.name for c in costs] == ["conv1", "relu6", "conv2", "residual", "relu"]
    assert len(set(kernel_groups(costs, "onnxruntime"))) == 4
    assert len(set(kernel_groups(costs, "tensorrt"))) == 2


@pytest.mark.parametrize("model, batch, needle", [
    (_conv_net(), None, "dynamic batch axis ('batch'); give the batch sizes to profile, e.g. --batch 1,8"),
    (_conv_net(size="height"), 1, "dynamic axis 2 ('height'); only the batch axis (0) may be dynamic"),
])
def test_a_dynamic_axis_the_profile_cannot_fill_is_refused(model, batch, needle):
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        graph_costs(model, batch)


def test_a_fixed_batch_is_used_and_a_contradicting_batch_refused(tmp_path):
    path = tmp_path / "fixed.onnx"
    onnx.save(_conv_net(batch=2), str(path))
    assert input_shapes(onnx.load(str(path)), None) == {"pixels": [2, 3, 16, 16]}
    with pytest.raises(ConfigError, match="fixes a batch of 2 on its input, so --batch 8 cannot apply"):
        profile_onnx(path, batches=[8], iterations=1)


def test_every_gpu_has_fp16_and_int8_tensor_core_peaks_above_fp32():
    for key in GPU_DEVICES:
        device = load_device(key)
        fp32, fp16, int8 = (gpu_peak_gflops(device, p)[0] for p in PRECISIONS)
        assert fp32 and fp16 and int8 and int8 >= fp16 > fp32, key
    # The AGX Orin's GPU: 170 sparse INT8 TOPS (the module's 275 counts its two DLAs too), 85 dense.
    assert gpu_peak_gflops(load_device("jetson_agx_orin_64gb"), "int8")[0] == pytest.approx(85_000)


def test_a_compute_bound_conv_net_runs_fastest_on_int8_tensor_cores():
    costs = graph_costs(_conv_net(size=224), batch=64)
    orin = load_device("jetson_agx_orin_64gb")
    by_precision = {p: model_device(costs, orin, None, precision=p, batch=64) for p in PRECISIONS}
    gpu = {p: figures["paths"]["gpu"]["latency_ms"] for p, figures in by_precision.items()}
    assert gpu["int8"] < gpu["fp16"] < gpu["fp32"] < by_precision["fp32"]["paths"]["cpu"]["latency_ms"]
    assert by_precision["int8"]["actions_per_s"] == pytest.approx(64e3 / by_precision["int8"]["latency_ms"])
    fastest = fastest_path(by_precision)
    assert (fastest["path"], fastest["precision"], fastest["name"]) == ("gpu", "int8", "GPU INT8 tensor cores")
    # A batch-1 MLP-sized net is all overhead: a board runs it on its CPU.
    tiny = {p: model_device(graph_costs(_conv_net(size=4), batch=1), orin, None, precision=p) for p in PRECISIONS}
    assert fastest_path(tiny)["name"] == "CPU FP32"


def _cpu(**fields) -> DeviceConfig:
    figures = {"name": "abacus", "kind": "cpu", "source": "https://example.invalid/abacus", "cpu_peak_gflops": 1.0,
               "cpu_memory_bandwidth_gbs": 1.0, "power_w": 10.0, "price_usd": 1.0}
    figures.update(fields)
    return OmegaConf.merge(OmegaConf.structured(DeviceConfig), figures)


def test_the_cpu_streams_from_the_smallest_cache_the_graph_fits_in():
    costs = graph_costs(_conv_net(), batch=1)  # about 65 KB touched per call
    levels = {"cpu_cache_kb": 32.0, "cpu_cache_bandwidth_gbs": 50.0, "cpu_llc_kb": 128.0, "cpu_llc_bandwidth_gbs": 20.0}
    assert cpu_bandwidth_gbs(costs, _cpu(**levels))[:2] == (20.0, "last-level cache (65 KB fit in 128 KB)")
    assert cpu_bandwidth_gbs(costs, _cpu(**{**levels, "cpu_cache_kb": 96.0}))[0] == 50.0
    assert cpu_bandwidth_gbs(costs, _cpu(**{**levels, "cpu_llc_kb": 32.0}))[0] == 1.0  # memory


def test_measured_ceilings_replace_the_spec_sheet_on_the_measured_host_only():
    costs = graph_costs(_conv_net(), batch=1)
    ceilings = {"compute_gflops": 10.0, "cache_gbs": 5.0, "llc_gbs": 4.0, "memory_gbs": 3.0}
    overheads = {"op_us": 0.5, "call_us": 2.0, "source": "test", "ceilings": ceilings}
    host = model_device(costs, load_device("host_cpu"), None, overheads)
    assert host["cpu_peak_gflops"] == 10.0 and host["measured_ceilings"] == ceilings
    assert host["cpu_bandwidth"]["gbs"] in (5.0, 4.0, 3.0)
    nano = model_device(costs, load_device("jetson_orin_nano"), None, overheads)
    assert nano["cpu_peak_gflops"] == 24.0 and nano["measured_ceilings"] is None


def test_the_bound_session_writes_what_onnxruntime_computes(conv_file):
    bound = BoundSession(conv_file.read_bytes(), batch=3)
    bound.run()
    expected = ort.InferenceSession(str(conv_file), providers=["CPUExecutionProvider"]).run(None, bound.feeds)[0]
    np.testing.assert_allclose(bound.outputs["features"], expected, rtol=1e-5, atol=1e-6)
    assert bound.outputs["features"].shape == (3, 4)


def test_reduced_precision_graphs_are_built_like_trtexecs_and_run(conv_file):
    data = conv_file.read_bytes()
    model = onnx.load_from_string(data)
    int8, what = host_graph(data, model, "int8")
    assert "static INT8 QDQ" in what
    assert {"QuantizeLinear", "DequantizeLinear"} <= {node.op_type for node in onnx.load_from_string(int8).graph.node}
    BoundSession(int8, batch=2).run()
    again, what = host_graph(int8, onnx.load_from_string(int8), "int8")  # already quantized: timed as it is
    assert again == int8 and what == "the file as given"
    fp16, what = host_graph(data, model, "fp16")
    assert "FP16" in what
    assert any(i.data_type == TensorProto.FLOAT16 for i in onnx.load_from_string(fp16).graph.initializer)
    BoundSession(fp16, batch=1).run()


def test_profile_onnx_measures_models_every_device_and_names_the_fastest_path(conv_file, tmp_path):
    out = tmp_path / "profile"
    result = run_cli(["profile", "--onnx", str(conv_file), "--batch", "1,4", "--iterations", "40", "--warmup", "2",
                      "--device", "jetson_orin_nano,h100_sxm", "--out", str(out)])
    assert result.returncode == 0, result.stderr[-3000:]
    for needle in ("Performance summary", "median =", "percentile(99%)", "host model vs measured p50",
                   "host ceilings measured on other graphs", "fastest path", "Jetson Orin Nano 8GB", "H100 SXM"):
        assert needle in result.stdout, needle
    figures = json.loads((out / "profile.json").read_text())
    assert figures["measured"] is True and figures["precision"] == "fp32"
    assert figures["measured_graph"] == "the file as given" and figures["graph"]["op_types"]["Conv"] == 2
    rows = {row["batch"]: row for row in figures["batches"]}
    assert set(rows) == {1, 4} and all(row["n"] == 40 for row in rows.values())
    for row in rows.values():  # predicted before timing, compared to the measured median
        assert row["host_model_error"] == pytest.approx(row["host_model_ms"] / row["p50_ms"] - 1)
    assert rows[4]["gflop_per_call"] == pytest.approx(4 * rows[1]["gflop_per_call"])
    assert set(figures["host_model"]["errors"]) == {"1", "4"} and figures["host_model"]["applies"] is True
    ceilings = figures["host_overheads"]["ceilings"]
    assert ceilings["compute_gflops"] > 0 and ceilings["memory_gbs"] > 0 and "not the network" in ceilings["source"]
    assert set(figures["devices"]) == {"jetson_orin_nano", "h100_sxm"}
    for key, by_batch in figures["devices"].items():
        for batch in ("1", "4"):
            entry = by_batch[batch]
            assert set(entry["precisions"]) == set(PRECISIONS) and entry["fastest"]["name"]
            assert entry["at_precision"]["batch"] == int(batch) and entry["at_precision"]["modeled"] is True
            assert "gpu" in entry["precisions"]["int8"]["paths"], key
    assert (out / "latency_histogram_b1.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("args, needle", [
    (["--onnx", "{text}"], "is not an ONNX model"),
    (["--onnx", "{missing}"], "does not exist"),
    (["--onnx", "{conv}", "--batch", "1", "--device", "jetson_nanoo"], "unknown device 'jetson_nanoo'; known devices"),
    (["--onnx", "{conv}"], "dynamic batch axis ('batch'); give the batch sizes to profile, e.g. --batch 1,8"),
    (["--onnx", "{conv}", "--batch", "1", "--variant", "int8"], "with --onnx give --precision"),
    (["{conv}", "--onnx", "{conv}"], "give a bundle directory or --onnx MODEL.onnx (one of them)"),
    ([], "give a bundle directory or --onnx MODEL.onnx (one of them)"),
    (["{tmp}", "--precision", "fp16"], "--precision applies to --onnx MODEL.onnx"),
])
def test_bad_profile_input_is_refused_naming_the_fix(args, needle, conv_file, tmp_path, capsys):
    text = tmp_path / "notes.onnx"
    text.write_text("this is a text file, not a protobuf\n")
    paths = {"text": text, "missing": tmp_path / "nowhere.onnx", "conv": conv_file, "tmp": tmp_path}
    assert main(["profile", *(a.format(**paths) for a in args)]) == 2
    assert needle in capsys.readouterr().err


def test_an_unknown_precision_is_refused_by_the_parser(conv_file, capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["profile", "--onnx", str(conv_file), "--batch", "1", "--precision", "fp8"])
    assert stopped.value.code == 2 and "invalid choice: 'fp8'" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="--precision 'fp8' is not known; use one of fp32, fp16, int8"):
        profile_onnx(conv_file, precision="fp8", batches=[1])


@pytest.mark.slow
def test_bench_conv_predicts_three_conv_nets(tmp_path):
    """`physai bench conv`: three nets predicted before timing, compared to their measured medians."""
    from physai.bench.conv_model import RESULT_FILE, bench_conv

    result = bench_conv(tmp_path, rounds=2, round_s=0.3)
    saved = json.loads((tmp_path / RESULT_FILE).read_text())
    assert set(saved["nets"]) == {"nature_cnn_64", "impala_cnn_96", "resnet18_224"}
    flops = [net["gflop"] for net in saved["nets"].values()]
    assert flops == sorted(flops) and saved["nets"]["resnet18_224"]["gflop"] == pytest.approx(3.64, rel=0.01)
    for net in result["nets"].values():
        assert net["error"] == pytest.approx(net["predicted_ms"] / net["measured"]["p50_ms"] - 1)
    assert "ceilings" in saved["calibration"] and saved["command"]
