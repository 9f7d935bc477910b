"""bfloat16 only where the processor multiplies it natively: elsewhere it is a scalar fallback, ~60x slower."""

from __future__ import annotations

import pytest

from samner_dspy.serving.hardware import cpu_flags, cpu_has_native_bf16, fast_dtype
from samner_dspy.training.finetune import TrainConfig

EPYC_AVX2 = "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu sse2 avx avx2 fma bmi2\n\nprocessor\t: 1\n"
XEON_AVX512 = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512dq avx512bw avx512vl\n"
SAPPHIRE = "flags\t\t: avx2 avx512f amx_bf16 amx_tile\n"
GRAVITON3 = "processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\n"
GRAVITON2 = "processor\t: 0\nFeatures\t: fp asimd atomics\n"


@pytest.mark.parametrize(
    ("cpuinfo", "machine", "native"),
    [
        (EPYC_AVX2, "x86_64", False),
        (XEON_AVX512, "x86_64", True),
        (SAPPHIRE, "x86_64", True),
        ("flags\t: avx2 avx512f\n", "x86_64", False),  # AVX-512 foundation without its byte/word part
        (GRAVITON3, "aarch64", True),
        (GRAVITON2, "aarch64", False),
        ("", "x86_64", False),
    ],
)
def test_bf16_is_native_only_on_processors_that_multiply_it(cpuinfo, machine, native):
    assert cpu_has_native_bf16(cpuinfo, machine) is native


def test_flags_are_read_from_the_first_processor_line_that_has_them():
    assert cpu_flags(EPYC_AVX2) == {"fpu", "sse2", "avx", "avx2", "fma", "bmi2"}
    assert cpu_flags("model name\t: x\n") == set()


def test_the_defaults_follow_this_machine(monkeypatch):
    import torch

    expected = "bfloat16" if cpu_has_native_bf16() else "float32"
    assert fast_dtype() == expected and fast_dtype(on_gpu=True) == "bfloat16"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert TrainConfig("explorer", "d", "m", "o").uses_bf16 is (expected == "bfloat16")
    assert TrainConfig("explorer", "d", "m", "o", bf16=True).uses_bf16 is True  # asked for, whatever the machine
    assert TrainConfig("explorer", "d", "m", "o", bf16=False).uses_bf16 is False
