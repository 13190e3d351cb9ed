"""The CPU a speed figure was measured on: its model and the instruction sets the classifier's runtimes
use (AVX2 / AVX-512 / Arm SIMD for float32, int8 dot products for the fused default's int8 pixel graph).
Benchmarks print it, since the same commands run several times faster on one 2-core machine than another."""

import os
import platform
from dataclasses import dataclass
from pathlib import Path

# x86: AVX-512 VNNI, AVX-VNNI (256-bit), AMX; Arm: the dot-product extension (FEAT_DotProd) and int8 matmul.
INT8_DOT_PRODUCT_FLAGS = ('avx512_vnni', 'avx_vnni', 'amx_int8', 'asimddp', 'i8mm')
VECTOR_FLAGS = ('avx2', 'avx512f', 'asimd', 'sve')


@dataclass(frozen=True)
class CpuFeatures:
    model: str
    flags: frozenset

    @property
    def int8_dot_product(self) -> list[str]:
        """The int8 dot-product instruction sets this CPU has (empty: none)."""
        return [flag for flag in INT8_DOT_PRODUCT_FLAGS if flag in self.flags]

    def summary(self) -> str:
        """One line for benchmark headers and logs, e.g. 'AMD EPYC, x86_64, 2 CPUs; avx2; int8 dot product: none'."""
        vector = ' '.join(flag for flag in VECTOR_FLAGS if flag in self.flags) or 'no listed vector extensions'
        return (f'{self.model}, {platform.machine()}, {os.cpu_count()} CPUs; {vector}; '
                f'int8 dot product: {" ".join(self.int8_dot_product) or "none"}')


def cpu_features(cpuinfo: str | None = None) -> CpuFeatures:
    """The CPU's model name and feature flags from ``/proc/cpuinfo`` text (read from the file when None;
    outside Linux the flags are unknown and come back empty)."""
    if cpuinfo is None:
        path = Path('/proc/cpuinfo')
        cpuinfo = path.read_text(errors='replace') if path.is_file() else ''
    fields = {}
    for line in cpuinfo.splitlines():
        key, separator, value = line.partition(':')
        if separator:
            fields.setdefault(key.strip().lower(), value.strip())
    flags = fields.get('flags') or fields.get('features') or ''  # x86 'flags', Arm 'Features'
    model = fields.get('model name') or fields.get('hardware') or platform.processor() or 'unknown CPU'
    return CpuFeatures(model, frozenset(flags.split()))
