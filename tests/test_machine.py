"""cnnlab.machine: which 16-bit arithmetic a CPU has natively, named where speed is reported."""

from __future__ import annotations

import pytest

from cnnlab import machine


@pytest.mark.parametrize("flags, bf16, fp16", [
    ({"avx2", "avx512f"}, [], []),                                        # AVX2/AVX-512 only: emulated
    ({"avx512_bf16", "avx512f"}, ["avx512_bf16"], []),                    # Zen 4/5, Cooper Lake
    ({"amx_tile", "amx_bf16", "amx_int8", "avx512_bf16", "avx512_fp16"},  # Sapphire Rapids
     ["amx_bf16", "avx512_bf16"], ["avx512_fp16"]),
    ({"amx_bf16", "amx_fp16", "avx512_fp16"}, ["amx_bf16"], ["amx_fp16", "avx512_fp16"]),  # Granite Rapids
    ({"bf16", "asimdhp"}, ["bf16"], ["asimdhp"]),                         # aarch64
])
def test_native_16bit_names_the_flags_a_cpu_has(flags, bf16, fp16):
    assert machine.native_16bit(flags) == {"bfloat16": bf16, "float16": fp16}


def test_the_cpu_summary_names_native_and_emulated_arithmetic(monkeypatch):
    monkeypatch.setattr(machine, "cpu_flags", lambda: {"avx512_bf16"})
    monkeypatch.setattr(machine, "cpu_name", lambda: "Some CPU")
    assert machine.cpu_summary() == "Some CPU (bf16: avx512_bf16; fp16: emulated)"
    assert machine.device_name("cpu") == machine.cpu_summary()
    info = machine.machine_info()
    assert info["native_16bit"] == {"bfloat16": ["avx512_bf16"]}
