"""Static instruction counts of the sequential scan kernels, compiled offline for sm_90a (no GPU needed).

Compiles ``triton_seq``'s generated kernels with Triton's own ptxas for an H100 target and reports registers,
spills and the SASS instruction mix (``cuobjdump -sass``). A static count is evidence for a kernel change, not
a timing: the GPU decides (``gpu_scan.sh variants``). The local Triton may differ from the GPU machine's.

    python benchmarks/seq_sass.py [--kernel bwd|fwd|summary] [--N 16] [--S 4] [--vec-bc 0|1] [--reuse-steps 0|1]
        [--split 1|2|4] [--pf 0|1|2] [--true-scr 0|1]
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import re
import subprocess
import tempfile

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from nnunet_mamba.kernels import triton_seq

BF16_PTRS = {"u", "delta", "Bm", "Cm", "z", "dout", "du_out", "dz_out", "ddelta", "out"}
INTS = {"L", "D", "K", "nC", "P", "n_b", "n_c", "s_a", "s_b", "s_c", "mul_b", "shr_b", "mul_c", "shr_c", "k", "REV",
        "ACC_IN", "FINAL", "T"}
FLAGS = dict(HAS_D=True, HAS_BIAS=True, HAS_Z=True, SOFTPLUS=True, HAS_CARRY=True, ATOMIC_BC=True, PARTIAL_BC=False,
             BD=32, I64=False, SHFL=True, SCR_READY=True, SCR=True, BWD=True, TRUE_SCR=False, DC_SUM=False)


def compile_kernel(kernel: str, N: int, S: int, vec_bc: int, reuse_steps: bool, split: int = 1, pf: int = 0,
                   true_scr: bool = False):
    fn = triton_seq.kernels(N, S, S, reuse_steps=reuse_steps, split=split)[kernel]
    flags = dict(FLAGS, N=N, VEC_BC=vec_bc, PF=pf, TRUE_SCR=true_scr, DC_SUM=true_scr)
    constexprs = {name: value for name, value in flags.items() if name in fn.arg_names}
    signature = {}
    for name in fn.arg_names:
        if name in constexprs:
            signature[name] = "constexpr"
        elif name in INTS or name == "PFD":
            signature[name] = "i32"
        else:
            signature[name] = "*bf16" if name in BF16_PTRS else "*fp32"
    src = ASTSource(fn, signature, constexprs=constexprs)
    return triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": 1})


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
    ap.add_argument("--S", type=int, default=4)
    ap.add_argument("--vec-bc", type=int, default=0)
    ap.add_argument("--reuse-steps", type=int, default=0)
    ap.add_argument("--split", type=int, default=1, help="lanes per channel (states split over them)")
    ap.add_argument("--pf", type=int, default=0, help="prefetch: 0 none, 1 into L2, 2 into L1")
    ap.add_argument("--true-scr", type=int, default=0,
                    help="1: the backward starts from the forward's carries (y, dz, dC in the summary walk)")
    a = ap.parse_args()
    compiled = compile_kernel(a.kernel, a.N, a.S, a.vec_bc, bool(a.reuse_steps), a.split, a.pf, bool(a.true_scr))
    mix, resources = sass_mix(compiled)
    row = dict(kernel=a.kernel, N=a.N, S=a.S, vec_bc=a.vec_bc, reuse_steps=a.reuse_steps, split=a.split, pf=a.pf,
               true_scr=a.true_scr, triton=triton.__version__,
               registers=resources.get("REG"), stack_bytes=resources.get("STACK"), local_bytes=resources.get("LOCAL"),
               instructions=sum(mix.values()), top=dict(mix.most_common(14)))
    print(json.dumps(row))


if __name__ == "__main__":
    main()
