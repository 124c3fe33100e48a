"""Source of the sequential (state-in-registers) kernels, generated per state size N.

Every program owns one chunk of ``T`` scan steps of one direction and a block of ``BD`` channels, one lane per
channel. The ``N`` states of a channel are ``N`` separate ``(BD,)`` fp32 vectors (one register per thread each: the
source is generated with the state loop unrolled, ``h0 .. h{N-1}``), so ``y = sum_n h_n C_n`` is a sum inside the
thread and no scan, shuffle or layout conversion is needed. Loads of a step are ``BD``-wide channel vectors
(u, delta, dout, z) and per-step scalars (B, C), independent of the state.

Kernels (one launch per direction; the caller accumulates the sum over directions in fp32):

* ``seq_summary``: forward (``BWD`` off): the chunk-exit state from a zero carry-in and ``sum dt`` per chunk, in
  the layout of the carry pass. Backward (``BWD``): a forward walk from the true carry-in (the forward's saved
  carries ``cst``) that writes the state at each sub-chunk start to a scratch buffer and gives ``y`` / ``dz`` / dC,
  then the adjoint summary ``a_first * g_first`` (a reverse walk) for the adjoint's carry pass.
* ``seq_fwd``: forward walk seeded with the carry, ``y = C.h + D u``, accumulate / gate / store.
* ``seq_bwd``: the chunk is cut into sub-chunks of ``S`` steps. Walk 1 writes the state at each sub-chunk start to
  the scratch (only for a single-chunk sequence, which has no summary launch; it then also gives y / dz / dC);
  walk 2 visits the sub-chunks last to first, recomputes their ``S`` states forward (kept in registers) and runs the
  adjoint ``g_t = dy_t C_t + a_{t+1} g_{t+1}`` backwards through them, reusing each step's inputs. ``dL/d(dt A)``
  is formed as ``(a_t g_t) * h_{t-1}`` from the recomputed ``h_{t-1}`` (no ``h_t - b_t`` cancellation).

dB / dC are summed over the warp's 32 channels by a butterfly of warp shuffles (``SHFL``, inline PTX) or one
``tl.sum`` per state (the interpreter), then written as relaxed fp32 atomics, per-block fp32 slabs or final stores.
B and C come as 16-byte vector loads (``VEC_BC``, inline PTX) where aligned, and the walks prefetch the next
iteration's lines into L2 (``PF``).
"""
from __future__ import annotations

import linecache

import triton
import triton.language as tl

from .common import LN2, LOG2E, positions_magic, softplus


class _Src:
    def __init__(self, N: int):
        self.lines = []
        self.N = N

    def __call__(self, ind, text):
        self.lines.append("    " * ind + text)

    def per_n(self, ind, text):
        """One line per state: ``#n`` its index."""
        for n in range(self.N):
            self(ind, text.replace("#n", str(n)))


def _index(src, ind, name, expr):
    """Emit ``name = expr``, widened to int64 when the kernel's ``I64`` flag is set."""
    src(ind, f"{name} = {expr}")
    src(ind, "if I64:")
    src(ind + 1, f"{name} = {name}.to(tl.int64)")


def _step(src, ind, j, s_expr, what):
    """Emit the per-step index math and loads for scan-order step ``s_expr`` of the chunk, suffix j."""
    _step_index(src, ind, j, s_expr)
    _step_loads(src, ind, j, what)


def _step_index(src, ind, j, s_expr):
    """Emit the index math of scan-order step ``s_expr`` of the chunk (suffix j): its sequence position, masks
    and offsets."""
    src(ind, f"s{j} = {s_expr}")
    src(ind, f"tp{j} = c * T + s{j} + REV * (T - 1 - 2 * s{j})")
    src(ind, f"tm{j} = tp{j} < L")
    _index(src, ind, f"row{j}", f"b * L + positions_magic(tp{j}, n_b, n_c, s_a, s_b, s_c, mul_b, shr_b, mul_c, shr_c)")
    src(ind, f"row{j} = tl.where(tm{j}, row{j}, 0)")
    src(ind, f"m{j} = dmask & tm{j}")
    src(ind, f"off{j} = row{j} * D + d")
    src(ind, f"bo{j} = (row{j} * K + k) * N")


def _step_loads(src, ind, j, what):
    """Emit the loads of step j's inputs named in ``what`` ("u", "dt", "dy" (dout, gated by z), "B", "C");
    needs :func:`_step_index` of that step."""
    if "u" in what:
        src(ind, f"u{j} = tl.load(u + off{j}, mask=m{j}, other=0.0).to(tl.float32)")
    if "dt" in what:
        src(ind, f"dto{j} = (row{j} * K + k) * D + d")
        src(ind, f"raw{j} = tl.load(delta + dto{j}, mask=m{j}, other=0.0).to(tl.float32)")
        src(ind, "if HAS_BIAS:")
        src(ind + 1, f"raw{j} = raw{j} + bias")
        src(ind, "if SOFTPLUS:")
        src(ind + 1, f"dt{j} = tl.where(m{j}, softplus(raw{j}), 0.0)")
        src(ind, "else:")
        src(ind + 1, f"dt{j} = tl.where(m{j}, raw{j}, 0.0)")
    if "dy" in what:
        src(ind, f"dy{j} = tl.load(dout + off{j}, mask=m{j}, other=0.0).to(tl.float32)")
        src(ind, "if HAS_Z:")
        src(ind + 1, f"zz{j} = tl.load(z + off{j}, mask=m{j}, other=0.0).to(tl.float32)")
        src(ind + 1, f"sz{j} = tl.sigmoid(zz{j})")
        src(ind + 1, f"do{j} = dy{j}")
        src(ind + 1, f"dy{j} = dy{j} * zz{j} * sz{j}")
    _load_bc(src, ind, j, what)


def _load_bc(src, ind, j, what):
    """Emit the loads of step j's B and / or C (those in ``what``); needs ``_step``'s index variables of that
    step."""
    for name, ptr in (("B", "Bm"), ("C", "Cm")):
        if name in what:
            _load_states(src, ind, f"{name}{j}_", f"{ptr} + bo{j}", f"tm{j}")


_V4 = ("tl.inline_asm_elementwise('ld.global.nc.v4.b32 {{$0, $1, $2, $3}}, [$4];', '=r,=r,=r,=r,l', [{p}], "
       "dtype=(tl.int32, tl.int32, tl.int32, tl.int32), is_pure=True, pack=1)")


def _load_states(src, ind, out, ptr, mask):
    """Emit the loads of one step's N values of B or C as fp32 scalars ``{out}{n}``.

    VEC_BC = 0: N scalar loads (masked). 1 (bf16) / 2 (fp32): 16-byte vector loads through inline PTX,
    8 resp. 4 values each, bf16 unpacked by shifts; the caller guarantees 16-byte alignment. Steps past
    the end load row 0 (their index is clamped) instead of zeros: harmless, their dt and dy are 0."""
    N = src.N
    for kind, per_vec in ((1, 8), (2, 4)):  # bf16: 8 values per 16 bytes, fp32: 4
        src(ind, f"{'if' if kind == 1 else 'elif'} VEC_BC == {kind}:")
        if N % per_vec:
            src(ind + 1, f"tl.static_assert(False, 'VEC_BC={kind} needs N % {per_vec} == 0')")
            continue
        for v in range(N // per_vec):
            src(ind + 1, f"{out}w{4 * v}, {out}w{4 * v + 1}, {out}w{4 * v + 2}, {out}w{4 * v + 3} = "
                         + _V4.format(p=f"{ptr} + {per_vec * v}"))
        for n in range(N):
            if kind == 1:  # two bf16 per word, the lower address in the low half
                bits = f"({out}w{n // 2} << 16)" if n % 2 == 0 else f"({out}w{n // 2} & -65536)"
            else:
                bits = f"{out}w{n}"
            src(ind + 1, f"{out}{n} = {bits}.to(tl.float32, bitcast=True)")
    src(ind, "else:")
    src.per_n(ind + 1, f"{out}#n = tl.load({ptr} + #n, mask={mask}, other=0.0).to(tl.float32)")


def _shfl(expr: str, mask: int) -> str:
    """Source of a warp butterfly shuffle (``shfl.sync.bfly``) of an fp32 (BD,) tensor."""
    return (f"tl.inline_asm_elementwise('shfl.sync.bfly.b32 $0, $1, {mask}, 0x1f, 0xffffffff;', '=r,r', "
            f"[{expr}], dtype=tl.float32, is_pure=True, pack=1)")


_PF = ("tl.inline_asm_elementwise('prefetch.global.L2 [$1]; mov.u32 $0, 0;', '=r,l', [{p}], dtype=tl.int32, "
       "is_pure=False, pack=1)")


def _prefetch(src, ind, ptrs):
    """Emit L2 prefetches (PTX ``prefetch.global``, no registers held) of per-lane pointer expressions, under the
    constexpr ``PF`` (the interpreter runs no PTX). ``ptrs``: (pointer expression, condition or None; "X and Y"
    nests the conditions)."""
    src(ind, "if PF:")
    for p, cond in ptrs:
        k = ind + 1
        for c in (cond.split(" and ") if cond else []):
            src(k, f"if {c}:")
            k += 1
        src(k, "pf_ = " + _PF.format(p=p))


_PF_ROWS = {"u": "u", "dy": "dout", "z": "z", "acc": "acc", "y_acc": "y_acc", "du_acc": "du_acc"}


def _prefetch_steps(src, ind, s_expr, what):
    """Prefetch the lines that the walk loads later for chunk steps ``s_expr`` (per lane: each lane takes one
    step): ``what`` maps the tensors ("u", "dt", "dy" = dout, "z", "B", "C", "acc", "y_acc", "du_acc") to the
    condition under which they are loaded (or None). Only this program's channel block; steps past the end
    of the sequence fetch row 0."""
    src(ind, "if PF:")
    ind += 1
    src(ind, f"pfs = {s_expr}")
    src(ind, "pft = c * T + pfs + REV * (T - 1 - 2 * pfs)")
    _index(src, ind, "pfr", "b * L + positions_magic(pft, n_b, n_c, s_a, s_b, s_c, mul_b, shr_b, mul_c, shr_c)")
    src(ind, "pfr = tl.where(pft < L, pfr, 0)")
    ptrs = []
    for w, cond in what.items():
        if w in _PF_ROWS:
            ptrs.append((f"{_PF_ROWS[w]} + pfr * D + pid_d * BD", cond))
        elif w == "dt":
            ptrs.append(("delta + (pfr * K + k) * D + pid_d * BD", cond))
        else:
            ptrs.append((f"{'Bm' if w == 'B' else 'Cm'} + (pfr * K + k) * N", cond))
    _prefetch(src, ind, ptrs)


def bfly_ok(N: int) -> bool:
    """Whether the butterfly can sum N states over a warp's 32 channel lanes."""
    return N & (N - 1) == 0 and N <= 32


def _lane_setup(src, ind):
    """Lane id (PTX ``%laneid``), its bits, and where the channel sums of :func:`_bfly` land: lane l holds the sum
    of state ``lane_n``; ``lane_w`` marks one writer per state."""
    p = src.N.bit_length() - 1
    src(ind, "lane = tl.inline_asm_elementwise('mov.u32 $0, %laneid;', '=r,r', [d], dtype=tl.int32, "
             "is_pure=True, pack=1)")
    for m in (16, 8, 4, 2, 1):
        src(ind, f"lb{m} = (lane & {m}) != 0")
    src(ind, f"lane_n = lane >> {5 - p}")  # the state whose channel sum this lane holds
    src(ind, f"lane_w = (lane & {(1 << (5 - p)) - 1}) == 0")  # one writer per state


def _bfly(src, ind, vals, out):
    """Sum each of the len(vals) per-lane values over the warp's 32 channel lanes with a butterfly
    reduce-scatter: 16+8+..+1 shuffles for 16 values, instead of 5 per value. Afterwards lane l holds the sum of
    value ``lane_n`` (see :func:`_lane_setup`)."""
    vals = list(vals)
    bits = [16, 8, 4, 2, 1]
    while len(vals) > 1:
        m = bits.pop(0)
        h = len(vals) // 2
        nxt = []
        for i in range(h):
            lo, hi = vals[i], vals[i + h]
            src(ind, f"{out}_s{i} = tl.where(lb{m}, {lo}, {hi})")
            src(ind, f"{out}_k{m}_{i} = tl.where(lb{m}, {hi}, {lo}) + {_shfl(f'{out}_s{i}', m)}")
            nxt.append(f"{out}_k{m}_{i}")
        vals = nxt
    x = vals[0]
    for m in bits:
        src(ind, f"{out}_a{m} = {x} + {_shfl(x, m)}")
        x = f"{out}_a{m}"
    src(ind, f"{out} = {x}")


def _channel_sums(src, ind, vals, scal, vec):
    """Sums over the warp's channels of the lane's per-state values: butterfly into ``vec`` (SHFL) or one
    ``tl.sum`` per state into ``scal{state}``."""
    if bfly_ok(src.N):
        src(ind, "if SHFL:")
        _bfly(src, ind + 1, vals, vec)
        src(ind, "else:")
        ind += 1
    for n, v in enumerate(vals):
        src(ind, f"{scal}{n} = tl.sum({v}, 0)")


def _store_bc(src, ind, ptr, i, scal, vec):
    """Emit the dB/dC write of step i: per-state scalars ``scal#n`` (tl.sum path) or one lane vector ``vec``
    (SHFL path), as fp32 atomics, fp32 partial-slab stores or final-dtype stores."""
    for mode, op in (("ATOMIC_BC", "tl.atomic_add({p}, {v}, mask={m}, sem='relaxed')"),
                     ("PARTIAL_BC", "tl.store({p}, {v}, mask={m})"),
                     (None, "tl.store({p}, ({v}).to(" + ptr + ".dtype.element_ty), mask={m})")):
        src(ind, f"if {mode}:" if mode == "ATOMIC_BC" else (f"elif {mode}:" if mode else "else:"))
        k = ind + 1
        if bfly_ok(src.N):
            src(k, "if SHFL:")
            src(k + 1, op.format(p=f"{ptr} + bo{i} + lane_n", v=vec, m=f"tm{i} & lane_w"))
            src(k, "else:")
            k += 1
        src.per_n(k, op.format(p=f"{ptr} + bo{i} + #n", v=f"{scal}#n", m=f"tm{i}"))


def _prologue(src, carry_parts):
    src(1, "c = tl.program_id(0)")  # chunks on grid axis 0 (axes 1, 2 stop at 65535)
    src(1, "pid_d = tl.program_id(1)")
    src(1, "b = tl.program_id(2)")
    src(1, "ln = tl.arange(0, BD)")
    src(1, "d = pid_d * BD + ln")
    src(1, "dmask = d < D")
    src(1, "abase = (k * D + d) * N")
    src.per_n(1, f"A2_#n = tl.load(A + abase + #n, mask=dmask, other=0.0) * {LOG2E!r}")
    src(1, "if HAS_BIAS:")
    src(2, "bias = tl.load(delta_bias + k * D + d, mask=dmask, other=0.0)")
    src(1, "else:")
    src(2, "bias = 0.0")
    for part, var, sign in carry_parts:
        # forward state: carry from the chunk before in scan order; adjoint: from the chunk after
        src(1, f"cin{part} = c {'-' if sign > 0 else '+'} 1 {'+' if sign > 0 else '-'} 2 * REV")
        src(1, f"cv{part} = (cin{part} >= 0) & (cin{part} < nC) & HAS_CARRY")
        src(1, f"cin{part} = tl.minimum(tl.maximum(cin{part}, 0), nC - 1)")
        _index(src, 1, f"cb{part}", f"((b * P + {part}) * K + k) * nC + cin{part}")
        # .to(fp32): without carries `st` is a dummy of the input dtype (a bf16 state would change type in the loop)
        src.per_n(1, f"{var}#n = tl.load(st + (cb{part} * N + #n) * D + d, mask=dmask & cv{part}, other=0.0)"
                     ".to(tl.float32)")


def _y_of_step(src, ind, j, u_expr):
    """``y{j} = D u + sum_n h_n C_n`` of the step."""
    src(ind, "if HAS_D:")
    src(ind + 1, f"y{j} = dsk * {u_expr}")
    src(ind, "else:")
    src(ind + 1, f"y{j} = tl.zeros([BD], dtype=tl.float32)")
    src.per_n(ind, f"y{j} += h#n * C{j}_#n")


def _gradient_setup(src, ind, slab_ptrs):
    """Emit what a kernel that writes dB / dC needs first: its channel block's slab of ``slab_ptrs`` (PARTIAL_BC),
    the skip weight ``dsk`` (HAS_D) and the lane bookkeeping of the butterfly (SHFL)."""
    src(ind, "if PARTIAL_BC:")
    _index(src, ind + 1, "slab", "pid_d * (tl.num_programs(2) * L * K * N)")
    for p in slab_ptrs:
        src(ind + 1, f"{p} += slab")
    src(ind, "if HAS_D:")
    src(ind + 1, "dsk = tl.load(Dskip + k * D + d, mask=dmask, other=0.0)")
    if bfly_ok(src.N):
        src(ind, "if SHFL:")
        _lane_setup(src, ind + 1)


def _y_dz_dc(src, ind, i):
    """Emit what the true state ``h`` after step i gives the backward: ``y`` (summed over directions in
    ``y_acc``; the last direction's ``dz``) when there is a gate z, and the step's dC (channel sums of
    ``dy h``)."""
    src(ind, "if HAS_Z:")
    _y_of_step(src, ind + 1, i, f"u{i}")
    src(ind + 1, "if ACC_IN:")
    src(ind + 2, f"y{i} += tl.load(y_acc + off{i}, mask=m{i}, other=0.0)")
    src(ind + 1, "if FINAL:")
    src(ind + 2, f"dzv{i} = do{i} * y{i} * sz{i} * (1.0 + zz{i} * (1.0 - sz{i}))")
    src(ind + 2, f"tl.store(dz_out + off{i}, dzv{i}.to(dz_out.dtype.element_ty), mask=m{i})")
    src(ind + 1, "else:")
    src(ind + 2, f"tl.store(y_acc + off{i}, y{i}, mask=m{i})")
    _channel_sums(src, ind, [f"dy{i} * h{n}" for n in range(src.N)], f"dc{i}_", f"rc{i}")
    _store_bc(src, ind, "dC", i, f"dc{i}_", f"rc{i}")


def _summary(src, S):
    src(0, "def seq_summary(u, delta, Bm, Cm, A, delta_bias, z, dout, st, dts, scr, cst, Dskip, y_acc, dz_out, dC,")
    src(0, "                L, D, K, nC, P, n_b, n_c, s_a, s_b, s_c, mul_b, shr_b, mul_c, shr_c, k, ACC_IN, FINAL,")
    src(0, "                N: tl.constexpr, REV, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, BWD: tl.constexpr,")
    src(0, "                HAS_Z: tl.constexpr, HAS_D: tl.constexpr, T, BD: tl.constexpr, I64: tl.constexpr,")
    src(0, "                VEC_BC: tl.constexpr, ATOMIC_BC: tl.constexpr, PARTIAL_BC: tl.constexpr,")
    src(0, "                SHFL: tl.constexpr, PF: tl.constexpr):")
    _prologue(src, [])
    # BWD: the walk starts from the forward's carry, writes the true state at each sub-chunk start for the
    # backward's walk 2, and gives y / dz / dC on the way
    src(1, "if BWD:")
    src(2, "cin0 = c - 1 + 2 * REV")
    src(2, "cv0 = (cin0 >= 0) & (cin0 < nC)")
    src(2, "cin0 = tl.minimum(tl.maximum(cin0, 0), nC - 1)")
    _index(src, 2, "cb0", "(b * K + k) * nC + cin0")
    src.per_n(2, "h#n = tl.load(cst + (cb0 * N + #n) * D + d, mask=dmask & cv0, other=0.0)")
    _gradient_setup(src, 2, ("dC",))
    _index(src, 2, "sc0", f"(b * nC + c) * (T // {S})")
    src(1, "else:")
    src.per_n(2, "h#n = tl.zeros([BD], dtype=tl.float32)")
    src(1, "sdt = tl.zeros([BD], dtype=tl.float32)")
    src(1, f"for q0 in range(0, T, {S}):")
    _prefetch_steps(src, 2, f"tl.minimum(q0 + {S} + ln % {S}, T - 1)",
                    {"u": None, "dt": None, "B": None, "dy": "BWD", "z": "BWD and HAS_Z", "C": "BWD",
                     "y_acc": "BWD and HAS_Z and ACC_IN"})
    for j in range(S):
        _step(src, 2, j, f"q0 + {j}", ("u", "dt", "B"))
    src(2, "if BWD:")
    for j in range(S):
        _step_loads(src, 3, j, ("dy", "C"))
    src(2, "if BWD:")  # the state at the sub-chunk start
    src(3, f"sq = sc0 + q0 // {S}")
    src.per_n(3, "tl.store(scr + (sq * N + #n) * D + d, h#n, mask=dmask)")
    for j in range(S):
        src(2, f"dtu{j} = dt{j} * u{j}")
        src(2, f"sdt += dt{j}")
        src.per_n(2, f"h#n = tl.exp2(dt{j} * A2_#n) * h#n + dtu{j} * B{j}_#n")
        src(2, "if BWD:")
        _y_dz_dc(src, 3, j)
    src(1, "if not BWD:")
    _index(src, 2, "sb", "((b * P) * K + k) * nC + c")
    src.per_n(2, "tl.store(st + (sb * N + #n) * D + d, h#n, mask=dmask)")
    _index(src, 1, "db", "(b * K + k) * nC + c")
    src(1, "tl.store(dts + db * D + d, sdt, mask=dmask)")
    src(1, "if BWD:")
    src.per_n(2, "g#n = tl.zeros([BD], dtype=tl.float32)")
    src(2, f"for q0 in range(0, T, {S}):")
    _prefetch_steps(src, 3, f"tl.maximum(T - 1 - (q0 + {S} + ln % {S}), 0)",
                    {"dt": None, "dy": None, "z": "HAS_Z", "C": None})
    for j in range(S):
        _step(src, 3, j, f"T - 1 - (q0 + {j})", ("dt", "dy", "C"))
    for j in range(S):
        src.per_n(3, f"g#n = tl.exp2(dt{j} * A2_#n) * (dy{j} * C{j}_#n + g#n)")
    _index(src, 2, "gb", "((b * P + 1) * K + k) * nC + c")
    src.per_n(2, "tl.store(st + (gb * N + #n) * D + d, g#n, mask=dmask)")
    src(0, "")


def _forward(src, S):
    src(0, "def seq_fwd(u, delta, A, Bm, Cm, Dskip, delta_bias, z, st, acc, out, L, D, K, nC, n_b, n_c, s_a, s_b,")
    src(0, "            s_c, mul_b, shr_b, mul_c, shr_c, k, ACC_IN, FINAL, N: tl.constexpr, REV, HAS_D: tl.constexpr,")
    src(0, "            HAS_BIAS: tl.constexpr, HAS_Z: tl.constexpr, SOFTPLUS: tl.constexpr, HAS_CARRY: tl.constexpr,")
    src(0, "            T, BD: tl.constexpr, I64: tl.constexpr, VEC_BC: tl.constexpr, PF: tl.constexpr):")
    src(1, "P = 1")
    _prologue(src, [(0, "h", +1)])
    src(1, "if HAS_D:")
    src(2, "dsk = tl.load(Dskip + k * D + d, mask=dmask, other=0.0)")
    src(1, f"for q0 in range(0, T, {S}):")
    _prefetch_steps(src, 2, f"tl.minimum(q0 + {S} + ln % {S}, T - 1)",
                    {"u": None, "dt": None, "B": None, "C": None, "acc": "ACC_IN", "z": "FINAL and HAS_Z"})
    for j in range(S):
        _step(src, 2, j, f"q0 + {j}", ("u", "dt", "B", "C"))
    for j in range(S):
        src(2, f"dtu{j} = dt{j} * u{j}")
        src.per_n(2, f"h#n = tl.exp2(dt{j} * A2_#n) * h#n + dtu{j} * B{j}_#n")
        _y_of_step(src, 2, j, f"u{j}")
        src(2, "if ACC_IN:")
        src(3, f"y{j} += tl.load(acc + off{j}, mask=m{j}, other=0.0)")
        src(2, "if FINAL:")
        src(3, "if HAS_Z:")
        src(4, f"zq{j} = tl.load(z + off{j}, mask=m{j}, other=0.0).to(tl.float32)")
        src(4, f"y{j} = y{j} * zq{j} * tl.sigmoid(zq{j})")
        src(3, f"tl.store(out + off{j}, y{j}.to(out.dtype.element_ty), mask=m{j})")
        src(2, "else:")
        src(3, f"tl.store(acc + off{j}, y{j}, mask=m{j})")
    src(0, "")


def _backward(src, S):
    N = src.N
    src(0, "def seq_bwd(u, delta, A, Bm, Cm, Dskip, delta_bias, z, dout, st, scr, du_acc, y_acc, du_out, dz_out,")
    src(0, "            ddelta, dB, dC, dA_p, dD_p, dbias_p, L, D, K, nC, n_b, n_c, s_a, s_b, s_c,")
    src(0, "            mul_b, shr_b, mul_c, shr_c, k, ACC_IN, FINAL, N: tl.constexpr, REV, HAS_D: tl.constexpr,")
    src(0, "            HAS_BIAS: tl.constexpr, HAS_Z: tl.constexpr, SOFTPLUS: tl.constexpr, HAS_CARRY: tl.constexpr,")
    src(0, "            ATOMIC_BC: tl.constexpr, PARTIAL_BC: tl.constexpr, T, BD: tl.constexpr, I64: tl.constexpr,")
    src(0, "            SHFL: tl.constexpr, SCR_READY: tl.constexpr, VEC_BC: tl.constexpr, PF: tl.constexpr):")
    src(1, "P = 2")
    _prologue(src, [(1, "gp", -1)])
    _gradient_setup(src, 1, ("dB", "dC"))
    src(1, f"MS = T // {S}")
    _index(src, 1, "sc0", "(b * nC + c) * MS")
    # walk 1: states at sub-chunk starts -> scratch (a single chunk: no summary launch wrote them)
    src(1, "if not SCR_READY:")
    src.per_n(2, "h#n = tl.zeros([BD], dtype=tl.float32)")
    src(2, "for j in range(MS):")
    src.per_n(3, "tl.store(scr + ((sc0 + j) * N + #n) * D + d, h#n, mask=dmask)")
    for i in range(S):
        _step(src, 3, i, f"j * {S} + {i}", ("u", "dt", "B"))
        src.per_n(3, f"h#n = tl.exp2(dt{i} * A2_#n) * h#n + (dt{i} * u{i}) * B{i}_#n")
    # walk 2
    src.per_n(1, "dA#n = tl.zeros([BD], dtype=tl.float32)")
    src(1, "dDacc = tl.zeros([BD], dtype=tl.float32)")
    src(1, "dbacc = tl.zeros([BD], dtype=tl.float32)")
    src(1, "for jj in range(MS):")
    src(2, "j = MS - 1 - jj")
    src(2, "if PF:")  # the lines of the next sub-chunk (j - 1): its scratch states and step inputs
    src(3, "jn = tl.maximum(j - 1, 0)")
    _prefetch(src, 3, [(f"scr + ((sc0 + jn) * N + (ln + {n0}) % N) * D + pid_d * BD", None) for n0 in range(0, N, 32)])
    _prefetch_steps(src, 3, f"jn * {S} + ln % {S}",
                    {"u": None, "dt": None, "dy": None, "z": "HAS_Z", "B": None, "C": None,
                     "y_acc": "not SCR_READY and HAS_Z and ACC_IN", "du_acc": "ACC_IN"})
    src.per_n(2, "h#n = tl.load(scr + ((sc0 + j) * N + #n) * D + d, mask=dmask, other=0.0)")
    for i in range(S):  # forward recompute: keep h_{t-1}; y, dz and dC where the summary walk did not give them
        _step(src, 2, i, f"j * {S} + {i}", ("u", "dt", "dy", "B", "C"))
        src(2, f"dtu{i} = dt{i} * u{i}")
        src.per_n(2, f"hp{i}_#n = h#n")
        src.per_n(2, f"h#n = tl.exp2(dt{i} * A2_#n) * h#n + dtu{i} * B{i}_#n")
        src(2, "if not SCR_READY:")
        _y_dz_dc(src, 3, i)
    for i in reversed(range(S)):  # adjoint, backwards through the sub-chunk; B and C reloaded, the rest reused
        _load_bc(src, 2, i, ("B", "C"))
        src(2, f"dtu{i} = dt{i} * u{i}")
        src(2, f"sgB{i} = tl.zeros([BD], dtype=tl.float32)")
        src(2, f"xa{i} = tl.zeros([BD], dtype=tl.float32)")
        for n in range(N):
            src(2, f"g = dy{i} * C{i}_{n} + gp{n}")
            src(2, f"gp{n} = tl.exp2(dt{i} * A2_{n}) * g")
            src(2, f"x = gp{n} * hp{i}_{n}")
            src(2, f"xa{i} += x * A2_{n}")
            src(2, f"dA{n} += x * dt{i}")
            src(2, f"sgB{i} += g * B{i}_{n}")
            src(2, f"pb{i}_{n} = g * dtu{i}")
        _channel_sums(src, 2, [f"pb{i}_{n}" for n in range(N)], f"db{i}_", f"rb{i}")
        _store_bc(src, 2, "dB", i, f"db{i}_", f"rb{i}")
        src(2, f"ddt{i} = xa{i} * {LN2!r} + sgB{i} * u{i}")
        src(2, "if SOFTPLUS:")
        src(3, f"ddt{i} = ddt{i} * tl.sigmoid(raw{i})")
        src(2, f"ddt{i} = tl.where(m{i}, ddt{i}, 0.0)")
        src(2, f"tl.store(ddelta + dto{i}, ddt{i}.to(ddelta.dtype.element_ty), mask=m{i})")
        src(2, f"dbacc += ddt{i}")
        src(2, f"du{i} = sgB{i} * dt{i}")
        src(2, "if HAS_D:")
        src(3, f"du{i} += dsk * dy{i}")
        src(3, f"dDacc += dy{i} * u{i}")
        src(2, "if ACC_IN:")
        src(3, f"du{i} += tl.load(du_acc + off{i}, mask=m{i}, other=0.0)")
        src(2, "if FINAL:")
        src(3, f"tl.store(du_out + off{i}, du{i}.to(du_out.dtype.element_ty), mask=m{i})")
        src(2, "else:")
        src(3, f"tl.store(du_acc + off{i}, du{i}, mask=m{i})")
    _index(src, 1, "pb", "(b * nC + c) * K + k")
    src.per_n(1, "tl.store(dA_p + (pb * N + #n) * D + d, dA#n, mask=dmask)")
    src(1, "if HAS_D:")
    src(2, "tl.store(dD_p + pb * D + d, dDacc, mask=dmask)")
    src(1, "if HAS_BIAS:")
    src(2, "tl.store(dbias_p + pb * D + d, dbacc, mask=dmask)")


def source(N: int, S: int) -> str:
    """The three kernels' source for state size N and sub-chunk S (also the walks' unroll)."""
    src = _Src(N)
    _summary(src, S)
    _forward(src, S)
    _backward(src, S)
    return "\n".join(src.lines) + "\n"


_CACHE: dict = {}
# D, the lengths, the geometry (with its division constants), the per-direction flags (REV, ACC_IN, FINAL) and the
# chunk length T stay unspecialised (fewer compiled variants): every (BD,) tensor then has one element per thread
# per 32 channels, all in one layout (no vectorised loads that would need conversions).
_NOSPEC = ["L", "D", "K", "nC", "P", "n_b", "n_c", "s_a", "s_b", "s_c", "mul_b", "shr_b", "mul_c", "shr_c", "k", "REV",
           "ACC_IN", "FINAL", "T"]


def kernels(N: int, S: int) -> dict:
    """The generated kernels for state size N and sub-chunk S (cached): {"summary", "fwd", "bwd"}."""
    key = (N, S)
    if key not in _CACHE:
        src = source(N, S)
        fname = f"<nnunet_mamba.kernels.triton.sequential N={N} S={S}>"
        linecache.cache[fname] = (len(src), None, src.splitlines(True), fname)
        ns = {"tl": tl, "triton": triton, "positions_magic": positions_magic, "softplus": softplus,
              "__name__": __name__}
        exec(compile(src, fname, "exec"), ns)
        out = {}
        for name, fn in (("summary", "seq_summary"), ("fwd", "seq_fwd"), ("bwd", "seq_bwd")):
            f = ns[fn]
            names = f.__code__.co_varnames[:f.__code__.co_argcount]
            out[name] = triton.jit(do_not_specialize=[a for a in _NOSPEC if a in names])(f)
        _CACHE[key] = out
    return _CACHE[key]
