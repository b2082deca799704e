"""ISA caps: the runtimes' own environment variables that forbid newer instruction sets.

Each runtime obeys its own variable (oneDNN, ATen, MKL, FBGEMM, OpenVINO); what obeys which was
measured (docs/architecture.md). Detection reads them (:class:`IsaCap`), so that a cap removes the
flags it forbids from what techniques and contracts see, and shows in the fingerprint.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

# The x86 levels a cap can stop at, lowest first, each with the flags of ISA_FLAGS it still allows.
_CAP_LEVELS: dict[str, frozenset[str]] = {}
for _level, _added in (
    ("sse4", ()),
    ("avx2", ("avx2",)),
    ("avx512", ("avx512f",)),
    ("avx512vnni", ("avx512_vnni",)),
    ("avx512bf16", ("avx512_bf16",)),
    ("avx512fp16", ("avx512_fp16",)),
    ("amx", ("amx_tile", "amx_int8", "amx_bf16")),
):
    _CAP_LEVELS[_level] = frozenset().union(*_CAP_LEVELS.values(), _added)
_X86_FLAGS = _CAP_LEVELS["amx"]

# Each variable that caps a runtime's instruction set, what obeys it (measured: see
# docs/architecture.md), and the level each of its values allows; None: no cap.
ISA_CAP_VARIABLES: dict[str, tuple[str, dict[str, str | None]]] = {
    "ONEDNN_MAX_CPU_ISA": (
        "oneDNN: torch's convolutions and bf16 matmuls, TensorFlow, OpenVINO's CPU plugin "
        "(its kernels, not its default precision: OpenVINO variants pin f32 where a cap forbids "
        "bf16)",
        {
            "SSE41": "sse4",
            "AVX": "sse4",
            "AVX2": "avx2",
            "AVX2_VNNI": "avx2",
            "AVX2_VNNI_2": "avx2",
            "AVX512_CORE": "avx512",
            "AVX512_CORE_VNNI": "avx512vnni",
            "AVX512_CORE_BF16": "avx512bf16",
            "AVX512_CORE_FP16": "avx512fp16",
            "AVX10_1_512": "avx512fp16",
            "AVX512_CORE_AMX": "amx",
            "AVX10_1_512_AMX": "amx",
            "AVX512_CORE_AMX_FP16": None,
            "AVX10_1_512_AMX_FP16": None,
            "ALL": None,
            "DEFAULT": None,
        },
    ),
    "ATEN_CPU_CAPABILITY": (
        "torch's vectorized ATen kernels (elementwise, reductions, softmax)",
        {"DEFAULT": "sse4", "AVX2": "avx2", "AVX512": None},
    ),
    "MKL_ENABLE_INSTRUCTIONS": (
        "MKL: torch's fp32 BLAS (Linear, matmul)",
        {
            "SSE4_2": "sse4",
            "AVX": "sse4",
            "AVX2": "avx2",
            "AVX512": "avx512",
            "AVX512_E1": "avx512vnni",
        },
    ),
    "FBGEMM_ENABLE_INSTRUCTIONS": (
        "FBGEMM: torch's x86 int8 kernels (dynamic and FX static int8)",
        {
            "AVX2": "avx2",
            "AVX512": "avx512",
            "AVX512_256": "avx512",
            "AVX512_E1": "avx512vnni",
            "AVX512_E1_256": "avx512vnni",
        },
    ),
}
_CAP_ALIASES = {"DNNL_MAX_CPU_ISA": "ONEDNN_MAX_CPU_ISA"}  # oneDNN's older spelling


@dataclass(frozen=True)
class IsaCap:
    """The instruction-set caps in force, read from the runtimes' environment variables.

    ``level`` is the lowest level any of them allows: techniques and contracts see only the flags
    it allows, though runtimes that obey none of these variables (ONNX Runtime's MLAS, XNNPACK in
    LiteRT, OpenVINO's MLAS GEMMs) still use everything the CPU has.
    """

    variables: tuple[tuple[str, str], ...]
    level: str | None
    unrecognized: tuple[str, ...] = ()

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> IsaCap | None:
        """Read the caps from ``environ`` (default: this process's); None when none is set.

        A value that is not understood is kept in ``unrecognized`` and not applied.
        """
        environ = os.environ if environ is None else environ
        variables, levels, unrecognized = [], [], []
        for name in (*ISA_CAP_VARIABLES, *_CAP_ALIASES):
            value = environ.get(name, "").strip()
            if not value:
                continue
            variables.append((name, value))
            _, levels_of = ISA_CAP_VARIABLES[_CAP_ALIASES.get(name, name)]
            if value.upper() not in levels_of:
                unrecognized.append(f"{name}={value}")
            elif (level := levels_of[value.upper()]) is not None:
                levels.append(level)
        if not variables:
            return None
        order = list(_CAP_LEVELS)
        lowest = min(levels, key=order.index) if levels else None
        return cls(tuple(variables), lowest, tuple(unrecognized))

    def allows(self, flag: str) -> bool:
        """Return whether the cap lets runtimes use ``flag`` (flags it does not govern pass)."""
        return self.level is None or flag not in _X86_FLAGS or flag in _CAP_LEVELS[self.level]

    def obeyed_by(self) -> dict[str, str]:
        """Return, for each variable in force, what obeys it."""
        return {
            name: ISA_CAP_VARIABLES[_CAP_ALIASES.get(name, name)][0] for name, _ in self.variables
        }

    def describe(self) -> str:
        """Return the variables in force, ``NAME=value``, and those not understood."""
        text = ", ".join(f"{name}={value}" for name, value in self.variables)
        if self.unrecognized:
            text += f" (not understood, so not applied: {', '.join(self.unrecognized)})"
        return text
