"""The CPU's int8 dot-product instructions, read from /proc/cpuinfo text as Linux writes it on x86 and Arm."""
import platform

from fer_ros.cpu_features import cpu_features

ZEN3 = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC
flags\t\t: fpu vme sse sse2 ssse3 fma sse4_1 sse4_2 avx f16c avx2 sha_ni vaes vpclmulqdq

processor\t: 1
model name\t: AMD EPYC
flags\t\t: fpu vme sse sse2 ssse3 fma sse4_1 sse4_2 avx f16c avx2 sha_ni vaes vpclmulqdq
"""
ICE_LAKE = """processor\t: 0
model name\t: Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz
flags\t\t: fpu sse2 avx avx2 avx512f avx512dq avx512bw avx512_vnni avx512_bitalg
"""
GRAVITON2 = """processor\t: 0
BogoMIPS\t: 243.75
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp
CPU implementer\t: 0x41
"""


def test_int8_dot_product_instructions_are_found_on_x86_and_arm():
    amd, intel, arm = (cpu_features(text) for text in (ZEN3, ICE_LAKE, GRAVITON2))
    assert amd.model == 'AMD EPYC' and 'avx2' in amd.flags and amd.int8_dot_product == []
    assert 'int8 dot product: none' in amd.summary() and 'avx2' in amd.summary()
    assert intel.int8_dot_product == ['avx512_vnni'] and 'avx2 avx512f' in intel.summary()
    assert arm.int8_dot_product == ['asimddp'] and 'asimd' in arm.flags
    assert cpu_features('').flags == frozenset() and cpu_features('').int8_dot_product == []


def test_this_machine_is_described():
    cpu = cpu_features()
    assert cpu.model
    if platform.system() == 'Linux' and platform.machine() in ('x86_64', 'aarch64'):
        assert cpu.flags and ('sse2' in cpu.flags or 'fp' in cpu.flags)
