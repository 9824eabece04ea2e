"""The host's own figures, read from the machine the model runs on instead of a config file.

``configs/device/host_cpu.yaml`` models "this machine" so the profile stage can check the model against
a measurement; a fixed clock and cache size there are right on one machine and wrong on the next. A
device with ``read_host: true`` takes, from Linux's own reports:

- the clock: ``cpufreq/cpuinfo_max_freq`` of cpu0 (the core's maximum), else ``cpu MHz`` in
  /proc/cpuinfo (on a VM without cpufreq, the host's nominal clock);
- the per-core cache: the largest data or unified cache of cpu0 that no other CPU shares
  (``cache/index*/{level,type,size,shared_cpu_list}``), typically its L2;
- the SIMD width from the CPU flags: avx512f 16 FP32 lanes, avx/avx2 8, sse 4, Arm asimd/neon 4;
  FMA (x86 ``fma``; every Arm core with asimd) counts 2 FLOP per lane.

Peak = clock x lanes x FLOP per lane x ``cpu_fma_units`` (from the file); the cache bandwidth keeps the
file's bytes per cycle at the read clock. What the machine does not expose falls back to the file's
value, with one logged note per figure.
"""

from __future__ import annotations

import logging
import os
import platform
import re
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping, Optional

log = logging.getLogger(__name__)

CPUINFO = Path("/proc/cpuinfo")
CPU0 = Path("/sys/devices/system/cpu/cpu0")
_SIZE = re.compile(r"^\s*(\d+)\s*([KMG]?)i?B?\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class CpuFacts:
    """What this machine says about one core; None where it does not say."""

    model: Optional[str] = None
    clock_ghz: Optional[float] = None
    clock_source: Optional[str] = None
    cache_kb: Optional[float] = None      # the largest cache private to cpu0
    cache_level: Optional[int] = None
    caches_kb: dict = field(default_factory=dict)  # "L1d", "L2", "L3" -> KB, as cpu0 sees them
    simd: Optional[str] = None            # the widest vector ISA in the flags
    fp32_lanes: Optional[int] = None
    fma: Optional[bool] = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _size_kb(text: str) -> Optional[float]:
    match = _SIZE.match(text)
    if not match:
        return None
    value, unit = float(match.group(1)), match.group(2).upper()
    return value * {"": 1 / 1024, "K": 1, "M": 1024, "G": 1024 * 1024}[unit]


def parse_cpuinfo(text: str) -> dict[str, Any]:
    """The first processor's model name, ``cpu MHz`` and flags (x86 ``flags``, Arm ``Features``)."""
    facts: dict[str, Any] = {}
    for line in text.splitlines():
        if not line.strip():
            if "flags" in facts:
                break  # the first processor's block is enough
            continue
        key, _, value = line.partition(":")
        key, value = key.strip().lower(), value.strip()
        if key == "model name" and "model" not in facts:
            facts["model"] = value
        elif key == "cpu mhz" and "mhz" not in facts:
            try:
                facts["mhz"] = float(value)
            except ValueError:
                pass
        elif key in ("flags", "features") and "flags" not in facts:
            facts["flags"] = set(value.split())
    return facts


def cpu_model() -> str:
    """This machine's processor, as ``/proc/cpuinfo`` names it (the platform's word where there is none)."""
    try:
        model = parse_cpuinfo(CPUINFO.read_text()).get("model")
    except OSError:
        model = None
    return model or platform.processor() or platform.machine()


def machine_description() -> str:
    """The machine a benchmark ran on, as its JSON records it: processor, cores and Python."""
    return f"{cpu_model()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def simd_from_flags(flags: set[str]) -> tuple[Optional[str], Optional[int], Optional[bool]]:
    """(widest vector ISA, FP32 lanes, fused multiply-add) from a flag set."""
    if "avx512f" in flags:
        return "avx512f", 16, True  # AVX-512F has FMA
    if "avx2" in flags or "avx" in flags:
        return ("avx2" if "avx2" in flags else "avx"), 8, "fma" in flags
    if "asimd" in flags or "neon" in flags:
        return ("asimd" if "asimd" in flags else "neon"), 4, True
    if "sse" in flags or "sse2" in flags:
        return "sse", 4, "fma" in flags
    return None, None, None


def read_caches(cpu_dir: Path) -> dict[str, dict[str, Any]]:
    """cpu0's data and unified caches: name -> {level, kb, private}, from ``cache/index*``."""
    caches: dict[str, dict[str, Any]] = {}
    for index in sorted((cpu_dir / "cache").glob("index*")):
        try:
            level = int((index / "level").read_text().strip())
            kind = (index / "type").read_text().strip()
            kb = _size_kb((index / "size").read_text())
        except (OSError, ValueError):
            continue
        if kind == "Instruction" or kb is None:
            continue
        try:
            shared = (index / "shared_cpu_list").read_text().strip()
        except OSError:
            shared = ""
        name = f"L{level}" + ("d" if kind == "Data" else "")
        caches[name] = {"level": level, "kb": kb, "private": shared in ("", "0")}
    return caches


def read_max_mhz(cpu_dir: Path) -> Optional[float]:
    for name in ("cpuinfo_max_freq", "scaling_max_freq"):
        try:
            return int((cpu_dir / "cpufreq" / name).read_text().strip()) / 1e3  # kHz
        except (OSError, ValueError):
            continue
    return None


def cpu_facts(cpuinfo_text: str, cpu_dir: Path) -> CpuFacts:
    """Every figure this machine exposes, from /proc/cpuinfo's text and cpu0's sysfs folder."""
    info = parse_cpuinfo(cpuinfo_text)
    max_mhz = read_max_mhz(cpu_dir)
    if max_mhz:
        clock, source = max_mhz / 1e3, "cpufreq cpuinfo_max_freq"
    elif info.get("mhz"):
        clock, source = info["mhz"] / 1e3, "/proc/cpuinfo cpu MHz"
    else:
        clock, source = None, None
    caches = read_caches(cpu_dir)
    private = [c for c in caches.values() if c["private"]]
    own = max(private, key=lambda c: c["level"]) if private else None
    simd, lanes, fma = simd_from_flags(info.get("flags") or set())
    return CpuFacts(model=info.get("model"), clock_ghz=clock, clock_source=source,
                    cache_kb=own["kb"] if own else None, cache_level=own["level"] if own else None,
                    caches_kb={name: c["kb"] for name, c in caches.items()}, simd=simd, fp32_lanes=lanes, fma=fma)


@lru_cache(maxsize=1)
def this_machine() -> CpuFacts:
    """This machine's facts (read once per process)."""
    try:
        text = CPUINFO.read_text()
    except OSError:
        text = ""
    return cpu_facts(text, CPU0)


class Overlay:
    """A device config with some figures replaced; every other attribute reads through."""

    def __init__(self, base: Any, overrides: Mapping[str, Any]) -> None:
        self._base, self._overrides = base, dict(overrides)

    def __getattr__(self, name: str) -> Any:
        if name in self._overrides:
            return self._overrides[name]
        return getattr(self._base, name)


_noted: set[str] = set()


def _note(key: str, message: str) -> None:
    if key not in _noted:
        _noted.add(key)
        log.info("%s", message)


def host_device(device: Any, facts: Optional[CpuFacts] = None) -> tuple[Any, Optional[dict[str, Any]]]:
    """``device`` with the clock, cache and peak of the machine it runs on, and a record of where each came from.

    Devices without ``read_host`` come back unchanged (and None).
    """
    if not getattr(device, "read_host", False):
        return device, None
    facts = facts if facts is not None else this_machine()
    file_clock = getattr(device, "cpu_clock_ghz", None)
    used: dict[str, Any] = {"facts": facts.as_dict(), "from_machine": [], "from_file": []}
    overrides: dict[str, Any] = {}

    clock = facts.clock_ghz
    if clock:
        used["from_machine"].append(f"clock {clock:.3g} GHz ({facts.clock_source})")
    else:
        clock = file_clock
        used["from_file"].append("clock")
        _note("clock", f"this machine exposes no CPU clock (no cpufreq, no 'cpu MHz'): the host model uses the "
                       f"device file's cpu_clock_ghz={file_clock}")
    lanes, fma = facts.fp32_lanes, facts.fma
    if lanes:
        used["from_machine"].append(f"SIMD {facts.simd} ({lanes} FP32 lanes{', FMA' if fma else ''})")
    else:
        lanes, fma = getattr(device, "cpu_simd_fp32_lanes", None), True
        used["from_file"].append("SIMD width")
        _note("simd", f"no SIMD flags in /proc/cpuinfo: the host model uses the device file's "
                      f"cpu_simd_fp32_lanes={lanes}")
    units = getattr(device, "cpu_fma_units", None) or 1
    if clock and lanes:
        overrides["cpu_peak_gflops"] = clock * lanes * (2 if fma else 1) * units
    else:
        used["from_file"].append("cpu_peak_gflops")
    if facts.cache_kb:
        overrides["cpu_cache_kb"] = facts.cache_kb
        used["from_machine"].append(f"L{facts.cache_level} {facts.cache_kb:g} KB per core (sysfs)")
    else:
        used["from_file"].append("cpu_cache_kb")
        _note("cache", f"this machine exposes no per-core cache size in sysfs: the host model uses the device "
                       f"file's cpu_cache_kb={device.cpu_cache_kb}")
    shared = [(int(name[1:].rstrip("d")), kb) for name, kb in facts.caches_kb.items()
              if name[1:].rstrip("d").isdigit() and int(name[1:].rstrip("d")) > (facts.cache_level or 0)]
    if shared:
        level, overrides["cpu_llc_kb"] = max(shared)
        used["from_machine"].append(f"L{level} {overrides['cpu_llc_kb']:g} KB last-level cache (sysfs)")
    if clock and file_clock and device.cpu_cache_bandwidth_gbs:
        overrides["cpu_cache_bandwidth_gbs"] = device.cpu_cache_bandwidth_gbs / file_clock * clock
    if clock:
        overrides["name"] = f"host CPU ({facts.model or 'this machine'}, 1 core @ {clock:.3g} GHz)"
    used["source"] = ("read from this machine: " + "; ".join(used["from_machine"])
                      if used["from_machine"] else "nothing readable on this machine")
    if used["from_file"]:
        used["source"] += "; from the device file: " + ", ".join(used["from_file"])
    used["cpu_peak_gflops"] = overrides.get("cpu_peak_gflops", device.cpu_peak_gflops)
    used["cpu_cache_kb"] = overrides.get("cpu_cache_kb", device.cpu_cache_kb)
    used["cpu_cache_bandwidth_gbs"] = overrides.get("cpu_cache_bandwidth_gbs", device.cpu_cache_bandwidth_gbs)
    used["cpu_llc_kb"] = overrides.get("cpu_llc_kb", device.cpu_llc_kb)
    return Overlay(device, overrides), used
