"""Static instruction counts of the sequential scan kernels, compiled offline for sm_90a (no GPU needed).

Compiles the generated kernels (``sequential_source.kernels(N, SUB_CHUNK)``) with Triton's own ptxas for an sm_90a
target, with the flags that ``plan`` picks for one shape, K and dtype (vector loads of B / C, prefetch, shuffles,
how dB / dC leave, carries), and reports registers, spills and the SASS instruction mix (``cuobjdump -sass``). The
summary kernel is compiled in its backward mode. A static count is evidence for a kernel change, not a timing: the
GPU decides (``scan.py --base``). The local Triton may differ from the GPU machine's.

    python benchmarks/seq_sass.py [--kernel bwd|fwd|summary] [--N 16] [--shape 2,256,32x32x32] [--K 3]
        [--dtype bf16|fp32]
"""
from __future__ import annotations

import argparse
import collections
import importlib
import json
import math
import os
import re
import subprocess
import tempfile

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

# the submodules themselves (the package's ``plan`` attribute is the function of that name)
PLAN, SOURCE = (importlib.import_module(f"nnunet_mamba.kernels.triton.{m}") for m in ("plan", "sequential_source"))

DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}
IO_PTRS = {"u", "delta", "Bm", "Cm", "z", "dout", "du_out", "dz_out", "ddelta", "out"}  # in the input dtype
INTS = {"L", "D", "K", "nC", "P", "n_b", "n_c", "s_a", "s_b", "s_c", "mul_b", "shr_b", "mul_c", "shr_c", "k", "REV",
        "ACC_IN", "FINAL", "T"}


def parse_shape(text: str) -> tuple:
    """'2,256,32x32x32' -> (2, 256, (32, 32, 32))."""
    b, d, grid = text.split(",")
    return int(b), int(d), tuple(int(g) for g in grid.split("x"))


def kernel_plan(shape: str, K: int, N: int, dtype: str):
    """The backward's plan of one shape (its flags are the forward's too); it has to use the sequential family."""
    Bsz, D, grid = parse_shape(shape)
    p = PLAN.plan(Bsz, math.prod(grid), D, K, N, DTYPES[dtype], True, False, True)
    if not p.sequential:
        raise SystemExit(f"{shape}: the plan picks the chunked family here, not the sequential kernels")
    return p


def flags(p, N: int) -> dict:
    """The constexpr arguments the host passes for plan ``p`` (every optional input present, softplus on)."""
    return dict(N=N, BD=p.BD, I64=p.i64, VEC_BC=p.vec_bc, PF=int(p.prefetch), SHFL=p.shuffles,
                ATOMIC_BC=p.bc == "atomic", PARTIAL_BC=p.bc == "slabs", HAS_CARRY=p.carries, SCR_READY=p.carries,
                BWD=True, HAS_D=True, HAS_BIAS=True, HAS_Z=True, SOFTPLUS=True)


def compile_kernel(kernel: str, N: int, p, dtype: str) -> tuple:
    """(the compiled kernel, its constexpr arguments)."""
    fn = SOURCE.kernels(N, PLAN.SUB_CHUNK)[kernel]
    constexprs = {name: value for name, value in flags(p, N).items() if name in fn.arg_names}
    io = "*bf16" if dtype == "bf16" else "*fp32"
    io_ptrs = IO_PTRS | ({"dB", "dC"} if p.bc == "store" else set())  # dB / dC: final stores, else fp32 buffers
    signature = {}
    for name in fn.arg_names:
        if name in constexprs:
            signature[name] = "constexpr"
        elif name in INTS:
            signature[name] = "i32"
        else:
            signature[name] = io if name in io_ptrs else "*fp32"
    src = ASTSource(fn, signature, constexprs=constexprs)
    return triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": p.num_warps}), constexprs


def sass_mix(compiled) -> tuple[collections.Counter, dict]:
    """(opcode counts, resource usage {REG, STACK, LOCAL, ...}) from cuobjdump on the cubin."""
    cuobjdump = os.path.join(os.path.dirname(triton.backends.nvidia.__file__), "bin", "cuobjdump")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "k.cubin")
        with open(path, "wb") as f:
            f.write(compiled.asm["cubin"])
        text = subprocess.run([cuobjdump, "-sass", path], capture_output=True, text=True, check=True).stdout
        usage = subprocess.run([cuobjdump, "-res-usage", path], capture_output=True, text=True, check=True).stdout
    ops = re.findall(r"/\*[0-9a-f]{4}\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_]*)", text)
    resources = {k: int(v) for k, v in re.findall(r"([A-Z]+):(\d+)", usage)}
    return collections.Counter(op.split(".")[0] for op in ops), resources


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kernel", default="bwd", choices=["bwd", "fwd", "summary"])
    ap.add_argument("--N", type=int, default=16)
    ap.add_argument("--shape", default="2,256,32x32x32", help="B,D,AxBxC whose plan gives the flags")
    ap.add_argument("--K", type=int, default=3)
    ap.add_argument("--dtype", default="bf16", choices=sorted(DTYPES))
    a = ap.parse_args()
    p = kernel_plan(a.shape, a.K, a.N, a.dtype)
    compiled, constexprs = compile_kernel(a.kernel, a.N, p, a.dtype)
    mix, resources = sass_mix(compiled)
    row = dict(kernel=a.kernel, N=a.N, S=PLAN.SUB_CHUNK, shape=a.shape, K=a.K, dtype=a.dtype,
               flags={k: v for k, v in constexprs.items() if k != "N"}, triton=triton.__version__,
               registers=resources.get("REG"), stack_bytes=resources.get("STACK"), local_bytes=resources.get("LOCAL"),
               instructions=sum(mix.values()), top=dict(mix.most_common(14)))
    print(json.dumps(row))


if __name__ == "__main__":
    main()
