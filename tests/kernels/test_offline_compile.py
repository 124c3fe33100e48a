"""Every shipped Triton kernel compiles for sm_90 (H100 / H200) on this CPU, with the flags the plan gives it.

Triton's interpreter runs the kernels as Python and accepts what the compiler refuses (a global that is not a
``tl.constexpr``, an unsupported construct), so the interpreter tests alone can pass while the GPU cannot compile a
kernel. This compiles each kernel offline (``triton.compile`` with a CUDA target: no GPU needed) in every variant the
host launches: both modes of the sequential summary, the backward with and without the summary's scratch, the
inline-PTX paths (vector loads, shuffles, prefetches), the chunked kernels and the parameter-gradient sum.
"""
from __future__ import annotations

import pytest

triton = pytest.importorskip("triton")
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from nnunet_mamba.kernels.triton import chunked, param_grads, sequential, sequential_source  # noqa: E402
from nnunet_mamba.kernels.triton.plan import SUB_CHUNK  # noqa: E402

INTS = {"L", "D", "N", "K", "nC", "P", "n_b", "n_c", "s_a", "s_b", "s_c", "mul_b", "shr_b", "mul_c", "shr_c", "k",
        "REV", "ACC_IN", "FINAL", "T", "k_f", "k_r", "rev_mask", "K_SEL", "PART0", "R", "n_cast"}
BF16 = {"u", "delta", "Bm", "Cm", "z", "dout", "du_out", "dz_out", "ddelta", "out", "dst0", "dst1"}


def compile_for_hopper(fn, constexprs: dict, num_warps: int, bf16: bool = True):
    """Compile ``fn`` for sm_90 with these constexpr values; integers as i32, input-dtype pointers as bf16."""
    signature = {}
    for name in fn.arg_names:
        if name in constexprs:
            signature[name] = "constexpr"
        elif name in INTS:
            signature[name] = "i32"
        else:
            signature[name] = "*bf16" if (bf16 and name in BF16) else "*fp32"
    src = ASTSource(fn, signature, constexprs=constexprs)
    compiled = triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": num_warps})
    assert compiled.asm.get("cubin"), "no machine code"
    return compiled


COMMON = dict(HAS_BIAS=True, SOFTPLUS=True, HAS_Z=True, HAS_D=True, I64=False)


@pytest.mark.parametrize("N,gpu_paths", [(2, False), (16, True)])
def test_sequential_kernels_compile(N, gpu_paths):
    ks = sequential_source.kernels(N, SUB_CHUNK)
    ptx = dict(VEC_BC=1 if gpu_paths else 0, SHFL=gpu_paths, PF=int(gpu_paths))
    out = dict(ATOMIC_BC=gpu_paths, PARTIAL_BC=False)
    for bwd in (False, True):
        compile_for_hopper(ks["summary"], dict(N=N, BD=32, BWD=bwd, **COMMON, **ptx, **out), 1)
    compile_for_hopper(ks["fwd"], dict(N=N, BD=32, HAS_CARRY=True, VEC_BC=ptx["VEC_BC"], PF=ptx["PF"],
                                       **{k: v for k, v in COMMON.items()}), 1)
    for ready in (False, True):
        compile_for_hopper(ks["bwd"], dict(N=N, BD=32, HAS_CARRY=ready, SCR_READY=ready, **COMMON, **ptx, **out), 1)


@pytest.mark.parametrize("bc", ["store", "atomic", "slabs"])
def test_chunked_kernels_compile(bc):
    flags = dict(HAS_F=True, HAS_R=True, ACC_IN=True, FINAL=True, BLOCK_T=64, BLOCK_D=16, **COMMON)
    compile_for_hopper(chunked._fwd_kernel, flags, 4)
    compile_for_hopper(chunked._bwd_kernel, dict(flags, ATOMIC_BC=bc == "atomic", PARTIAL_BC=bc == "slabs"), 4)


def test_carry_and_parameter_gradient_kernels_compile():
    compile_for_hopper(sequential._carry_kernel, dict(BLOCK_R=16, BLOCK_ND=256, I64=False), 4)
    compile_for_hopper(param_grads._param_grads_kernel,
                       dict(N=16, NP=16, HAS_D=True, HAS_BIAS=True, BLOCK_R=32, BLOCK_D=16, CAST=True,
                            BLOCK_C=1024), 4)
