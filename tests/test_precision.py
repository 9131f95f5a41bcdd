"""--precision auto: bf16 where the hardware computes it natively, fp32 elsewhere."""

from __future__ import annotations

import pytest

from adain import Decoder, Encoder, Stylizer
from adain.precision import auto_precision, cpu_flags, cpu_has_native_bf16

#: flags lines (abridged) of real CPUs
SAPPHIRE_RAPIDS = "fpu sse2 avx2 avx512f avx512bw avx512_bf16 amx_bf16 amx_tile amx_int8"
COOPER_LAKE = "fpu sse2 avx2 avx512f avx512bw avx512_bf16"
AMX_ONLY = "fpu sse2 avx2 amx_bf16 amx_tile"
SKYLAKE_X = "fpu sse2 avx2 avx512f avx512bw avx512_vnni"
ZEN2 = "fpu sse2 avx2 sha_ni"


@pytest.mark.parametrize(("flags", "native"), [
    (SAPPHIRE_RAPIDS, True), (COOPER_LAKE, True), (AMX_ONLY, True), (SKYLAKE_X, False), (ZEN2, False), ("", False),
    ("avx512_bf16x", False),  # whole flags only
])
def test_cpu_bf16_is_read_from_the_flags(flags, native):
    assert cpu_has_native_bf16(flags) is native


@pytest.mark.parametrize(("device", "cuda_bf16", "flags", "expected"), [
    ("cpu", True, SAPPHIRE_RAPIDS, "bf16"),
    ("cpu", True, ZEN2, "fp32"),
    ("cuda", True, ZEN2, "bf16"),  # the GPU decides, not the host CPU
    ("cuda", False, SAPPHIRE_RAPIDS, "fp32"),  # a GPU without bf16 (before Ampere)
    ("mps", True, SAPPHIRE_RAPIDS, "fp32"),
])
def test_auto_precision(device, cuda_bf16, flags, expected):
    assert auto_precision(device, cuda_bf16, flags) == expected


def test_this_machine_flags_come_from_proc_cpuinfo():
    assert cpu_has_native_bf16() is cpu_has_native_bf16(cpu_flags())


def test_stylizer_with_auto_runs_the_precision_chosen_for_its_device():
    stylizer = Stylizer(Encoder("vgg16"), Decoder("vgg16"), device="cpu", precision="auto")
    assert stylizer.precision == auto_precision("cpu")
    assert Stylizer(Encoder("vgg16"), Decoder("vgg16"), device="cpu").precision == "fp32"  # the library default
