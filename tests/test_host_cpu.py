"""The host device reads its clock, caches and SIMD width from the machine; device tables mark assumed figures."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from conftest import compose_config
from physai.deploy.devices.host import CpuFacts, cpu_facts, host_device, parse_cpuinfo, simd_from_flags
from physai.deploy.devices.onnx_cost import node_costs
from physai.deploy.devices.report import CPU_MARK, GPU_MARK, profile_lines
from physai.deploy.devices.roofline import check_device, model_device
from physai.core.errors import ConfigError

X86_CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Example Xeon 8000
cpu MHz\t\t: 2100.000
cache size\t: 1024 KB
flags\t\t: fpu sse sse2 avx avx2 fma avx512f avx512bw

processor\t: 1
model name\t: Example Xeon 8000
cpu MHz\t\t: 800.000
flags\t\t: fpu sse sse2
"""

ARM_CPUINFO = """processor\t: 0
BogoMIPS\t: 62.50
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp
CPU implementer\t: 0x41
CPU part\t: 0xd42

processor\t: 1
Features\t: fp
"""


def _sysfs(root: Path, caches: list[tuple[int, str, str, str]], max_khz: int | None = None) -> Path:
    """A hand-built cpu0 folder: (level, type, size, shared_cpu_list) per cache index, optional cpufreq."""
    cpu0 = root / "cpu0"
    for i, (level, kind, size, shared) in enumerate(caches):
        index = cpu0 / "cache" / f"index{i}"
        index.mkdir(parents=True)
        (index / "level").write_text(f"{level}\n")
        (index / "type").write_text(f"{kind}\n")
        (index / "size").write_text(f"{size}\n")
        (index / "shared_cpu_list").write_text(f"{shared}\n")
    if max_khz is not None:
        (cpu0 / "cpufreq").mkdir(parents=True)
        (cpu0 / "cpufreq" / "cpuinfo_max_freq").write_text(f"{max_khz}\n")
    cpu0.mkdir(parents=True, exist_ok=True)
    return cpu0


def test_x86_facts_prefer_cpufreq_and_take_the_largest_private_cache(tmp_path):
    cpu0 = _sysfs(tmp_path, [(1, "Data", "48K", "0"), (1, "Instruction", "32K", "0"), (2, "Unified", "2048K", "0"),
                             (3, "Unified", "32768K", "0-7")], max_khz=3500000)
    facts = cpu_facts(X86_CPUINFO, cpu0)
    assert facts.model == "Example Xeon 8000"
    assert facts.clock_ghz == 3.5 and facts.clock_source == "cpufreq cpuinfo_max_freq"
    assert facts.cache_kb == 2048 and facts.cache_level == 2  # L3 is shared with cpu1..7: not per core
    assert facts.caches_kb == {"L1d": 48, "L2": 2048, "L3": 32768}
    assert (facts.simd, facts.fp32_lanes, facts.fma) == ("avx512f", 16, True)


def test_without_cpufreq_the_clock_is_cpuinfo_mhz_of_the_first_processor(tmp_path):
    cpu0 = _sysfs(tmp_path, [(2, "Unified", "1024K", "0"), (3, "Unified", "16384K", "0-1")])
    facts = cpu_facts(X86_CPUINFO, cpu0)
    assert facts.clock_ghz == 2.1 and facts.clock_source == "/proc/cpuinfo cpu MHz"
    assert facts.cache_kb == 1024


def test_arm_facts_read_neon_from_features(tmp_path):
    cpu0 = _sysfs(tmp_path, [(1, "Data", "64K", "0"), (2, "Unified", "512K", "0"), (3, "Unified", "4096K", "0-5")],
                  max_khz=2201600)
    facts = cpu_facts(ARM_CPUINFO, cpu0)
    assert facts.model is None and facts.clock_ghz == pytest.approx(2.2016)
    assert (facts.simd, facts.fp32_lanes, facts.fma) == ("asimd", 4, True)
    assert facts.cache_kb == 512


@pytest.mark.parametrize("flags, expected", [
    ({"sse", "sse2", "avx", "avx2", "fma"}, ("avx2", 8, True)),
    ({"sse", "sse2", "avx"}, ("avx", 8, False)),
    ({"sse", "sse2"}, ("sse", 4, False)),
    (set(), (None, None, None)),
])
def test_simd_width_from_flags(flags, expected):
    assert simd_from_flags(flags) == expected


def test_parse_cpuinfo_reads_only_the_first_processor():
    info = parse_cpuinfo(X86_CPUINFO)
    assert info["mhz"] == 2100.0 and "avx512f" in info["flags"]


@pytest.fixture(scope="module")
def devices():
    return compose_config(["tracking=none"]).device


def test_the_host_device_uses_the_machines_figures(devices):
    facts = CpuFacts(model="Example Xeon 8000", clock_ghz=3.5, clock_source="cpufreq cpuinfo_max_freq",
                     cache_kb=2048, cache_level=2, simd="avx2", fp32_lanes=8, fma=True)
    host, used = host_device(devices.host_cpu, facts)
    assert host.cpu_peak_gflops == pytest.approx(3.5 * 8 * 2 * 2)  # clock x lanes x FMA x 2 units (the file's)
    assert host.cpu_cache_kb == 2048
    assert host.cpu_cache_bandwidth_gbs == pytest.approx(100.0 / 2.6 * 3.5)  # the file's bytes/cycle, new clock
    assert "Example Xeon 8000" in host.name and "3.5 GHz" in host.name
    assert used["from_file"] == [] and used["source"].startswith("read from this machine: clock 3.5 GHz")
    assert host.cpu_memory_bandwidth_gbs == devices.host_cpu.cpu_memory_bandwidth_gbs  # not readable: the file's


def test_what_the_machine_hides_falls_back_to_the_file_with_a_note(devices, caplog, monkeypatch):
    import physai.deploy.devices.host as host_module

    monkeypatch.setattr(host_module, "_noted", set())  # each note is logged once per process
    with caplog.at_level(logging.INFO, logger="physai.deploy.devices.host"):
        host, used = host_device(devices.host_cpu, CpuFacts())
    assert "cpu_clock_ghz=2.6" in caplog.text and "cpu_cache_kb=2048" in caplog.text
    assert host.cpu_peak_gflops == pytest.approx(2.6 * 16 * 2 * 2)  # the file's clock and lanes
    assert host.cpu_cache_kb == devices.host_cpu.cpu_cache_kb
    assert set(used["from_file"]) >= {"clock", "SIMD width", "cpu_cache_kb"}


def test_a_device_that_does_not_read_the_host_is_untouched(devices):
    board, used = host_device(devices.jetson_orin_nano, CpuFacts(clock_ghz=9.9, fp32_lanes=16, fma=True))
    assert board is devices.jetson_orin_nano and used is None


def test_reading_the_host_needs_a_measured_host(devices):
    board = devices.jetson_orin_nano.copy()
    board.read_host = True
    with pytest.raises(ConfigError, match="read_host"):
        check_device("jetson_orin_nano", board)


def test_device_tables_mark_figures_that_rest_on_assumed_constants(devices, smoke_run):
    costs = node_costs(smoke_run / "bundle" / "policy.onnx", batch=1)
    overheads = {"op_us": 0.3, "call_us": 2.0, "source": "micro-benchmark"}
    measured = devices.h100_sxm.copy()
    measured.gpu_overheads_measured = "a calibration run"
    modeled = {"host_cpu": model_device(costs, devices.host_cpu, 50.0, overheads),
               "jetson_orin_nano": model_device(costs, devices.jetson_orin_nano, 50.0, overheads),
               "h100_sxm": model_device(costs, measured, 50.0, overheads)}
    lines = profile_lines({"devices": modeled})

    def row(prefix: str) -> list[str]:
        return next(line for line in lines if line.startswith(f"| {prefix}") and "**(verdict)**" in line).split(" | ")

    host, nano, h100 = row("host CPU"), row("Jetson Orin Nano 8GB"), row("H100")
    # The host's CPU overheads are micro-benchmarked: no mark. A board's are its file's: marked.
    assert CPU_MARK not in "".join(host) and GPU_MARK not in "".join(host)
    assert GPU_MARK in nano[4] and CPU_MARK in nano[3]  # columns: device, mode, W, CPU path, GPU path, ...
    # A GPU whose launch and transfer were measured loses its dagger.
    assert GPU_MARK not in "".join(h100)
    notes = "\n".join(lines)
    assert "gpu_kernel_launch_us" in notes and "Jetson Orin Nano 8GB 10 / 40 us" in notes


@pytest.mark.slow
def test_the_host_model_predicts_a_real_policy_within_25_percent(smoke_run, devices):
    """The profile stage's promise, asserted: predicted before timing, within +-25% of the measured p50."""
    from physai.deploy.devices.microbench import measure_host_overheads
    from physai.edge.runtime import EdgePolicy
    from physai.deploy.latency import latency_figures, time_calls

    bundle = smoke_run / "bundle"
    overheads = measure_host_overheads(intra_op_threads=1, seed=0)
    predicted = model_device(node_costs(bundle / "policy.onnx", batch=1), devices.host_cpu, None,
                             overheads)["latency_ms"]
    policy = EdgePolicy.load(bundle, intra_op_threads=1)
    obs = np.random.default_rng(0).normal(size=policy.obs_dim).astype(np.float32)
    measured = latency_figures(time_calls(lambda: policy.act(obs), warmup=1000, iterations=10000))["p50_ms"]
    error = predicted / measured - 1
    assert abs(error) <= 0.25, (f"predicted {predicted * 1e3:.3g} us, measured p50 {measured * 1e3:.3g} us "
                                f"({error:+.1%})")
