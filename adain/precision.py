"""``precision="auto"``: bf16 where the hardware computes it natively, fp32 elsewhere (no torch needed here)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

#: /proc/cpuinfo flags of CPUs that compute bf16 natively: AVX-512 BF16, AMX-BF16.
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
CPUINFO = Path("/proc/cpuinfo")


def cpu_flags() -> str:
    """The ``flags`` line of /proc/cpuinfo (empty where there is none, e.g. not on Linux)."""
    try:
        text = CPUINFO.read_text()
    except OSError:
        return ""
    return next((line.partition(":")[2] for line in text.splitlines() if line.startswith("flags")), "")


def cpu_has_native_bf16(flags: str | None = None) -> bool:
    """Whether the CPU flags (a space-separated string, default this machine's) include AVX-512 BF16 or AMX-BF16."""
    return not set(BF16_CPU_FLAGS).isdisjoint((cpu_flags() if flags is None else flags).split())


def auto_precision(device_type: str, cuda_bf16: bool = True, flags: str | None = None) -> Literal["bf16", "fp32"]:
    """bf16 on a CUDA device that supports it (``cuda_bf16``) and on a CPU with native bf16 (``flags``), else fp32."""
    if device_type == "cuda":
        return "bf16" if cuda_bf16 else "fp32"
    return "bf16" if device_type == "cpu" and cpu_has_native_bf16(flags) else "fp32"
