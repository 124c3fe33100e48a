"""A bound on the backward's sub-chunk scratch traffic (measurement only: it makes the gradients wrong).

Patches the installed ``triton_seq.py`` so that every program's scratch lands in one of 16 shared slots (chunk index
modulo 16): at (2, 256, 32^3) the live scratch is then 16 x 2 MB and stays in L2, instead of 537 MB per direction
going to HBM and back. The kernels do the same work otherwise, so the time they save is what an L2-resident scratch
could save at most. Run as ``python3 scratch_slots_patch.py "$(python3 -c 'import nnunet_mamba.kernels.triton_seq
as m; print(m.__file__)')"``, then time; reinstall the wheel afterwards.
"""
import sys

p = sys.argv[1]
s = open(p).read()
a = 'f"(b * nC + c) * (T // {S})"'  # the summary walk's scratch index
b = '"(b * nC + c) * MS"'  # the backward kernel's
assert a in s and b in s
s = s.replace(a, 'f"((b * nC + c) % 16) * (T // {S})"').replace(b, '"((b * nC + c) % 16) * MS"')
open(p, "w").write(s)
print("patched", p)
