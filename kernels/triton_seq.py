"""Sequential (state-in-registers) Triton kernels of the multi-directional scan, generated per N.

Used by :mod:`.triton_scan` for long sequences. Every program owns one chunk of ``T`` scan steps
of one direction and a block of ``BD`` channels. The ``N`` states of a channel are ``N`` separate
``(BD,)`` fp32 vectors (one register per thread each: the source is generated with the state
loop unrolled, ``h0 .. h{N-1}``), so ``y = sum_n h_n C_n`` is a sum inside the thread and no
scan, shuffle or layout conversion is needed. Loads of a step are ``BD``-wide channel vectors
(u, delta, dout, z) and per-step scalars (B, C), independent of the state.

With ``split`` > 1 (opt-in, measured slower on H100) ``split`` adjacent lanes share a channel and each holds
``N / split`` of its states: sums over the states (``y``, ``du``, ``ddelta``) then add the lanes' parts by
shuffles, and the channel sums of dB/dC run over the remaining lane bits.

Kernels (one launch per direction; the caller accumulates the sum over directions in fp32):

* ``seq_summary``: chunk-exit state from zero carry-in (forward walk), the adjoint summary
  ``a_first * g_first`` (reverse walk, backward only) and ``sum dt`` per chunk, in the layout of
  ``triton_scan._carry_kernel``.
* ``seq_fwd``: forward walk seeded with the carry, ``y = C.h + D u``, accumulate / gate / store.
* ``seq_bwd``: the chunk is cut into sub-chunks of ``S`` steps. Walk 1 (forward) writes the state
  at each sub-chunk start to a scratch buffer; walk 2 visits the sub-chunks last to first,
  recomputes their ``S`` states forward (kept in registers, unrolled) and then runs the adjoint
  ``g_t = dy_t C_t + a_{t+1} g_{t+1}`` backwards through them. ``dL/d(dt A)`` is formed as
  ``(a_t g_t) * h_{t-1}`` from the stored ``h_{t-1}`` (no ``h_t - b_t`` cancellation).
"""
from __future__ import annotations

import linecache

import triton
import triton.language as tl

LOG2E = 1.4426950408889634
LN2 = 0.6931471805599453


@triton.jit
def _positions(t, n_b, n_c, s_a, s_b, s_c):
    i_c = t % n_c
    r = t // n_c
    i_b = r % n_b
    i_a = r // n_b
    return i_a * s_a + i_b * s_b + i_c * s_c


@triton.jit
def _seq_positions(t, n_b, n_c, s_a, s_b, s_c, mul_b, shr_b, mul_c, shr_c):
    """:func:`_positions` with both divisions as multiply-high and shift (constants from :func:`position_args`):
    about 30 fewer integer instructions per step of a walk than general divisions. Needs ``t`` < 2^31."""
    r = (tl.umulhi((t * 2).to(tl.uint32, bitcast=True), mul_c.to(tl.uint32, bitcast=True)) >> shr_c).to(tl.int32)
    i_a = (tl.umulhi((r * 2).to(tl.uint32, bitcast=True), mul_b.to(tl.uint32, bitcast=True)) >> shr_b).to(tl.int32)
    return i_a * s_a + (r - i_a * n_b) * s_b + (t - r * n_c) * s_c


def division_magic(d: int) -> tuple:
    """(multiplier as an int32 bit pattern, shift) with ``floor(n / d) == umulhi(2 n, m) >> shift`` for
    0 <= n < 2^31 (Granlund and Montgomery 1994, Theorem 4.2 with N = 31: ``m = ceil(2^(31+l) / d)``,
    ``l = ceil(log2 d)``, so ``m < 2^32``)."""
    if not 1 <= d < 2 ** 31:
        raise ValueError(f"divisor {d} out of range")
    shift = (d - 1).bit_length()
    m = -(-(1 << (31 + shift)) // d)
    return (m - (1 << 32) if m >= 1 << 31 else m), shift


def position_args(n_b: int, n_c: int) -> tuple:
    """The kernels' ``mul_b, shr_b, mul_c, shr_c`` arguments for a direction's axis sizes ``n_b``, ``n_c``."""
    return (*division_magic(n_b), *division_magic(n_c))


@triton.jit
def _softplus(x):
    return tl.where(x > 20.0, x, tl.log(1.0 + tl.exp(tl.minimum(x, 20.0))))


class _Src:
    def __init__(self, split: int = 1, NL: int = 0):
        self.lines = []
        self.split, self.NL = split, NL  # lanes per channel, states per lane

    def sidx(self, n) -> str:
        """Memory index of the lane's n-th state: ``part * NL + n`` when a channel's states are split over lanes."""
        return f"(part * {self.NL} + {n})" if self.split > 1 else str(n)

    def __call__(self, ind, text):
        self.lines.append("    " * ind + text)

    def per_n(self, ind, text, N):
        for n in range(N):
            self(ind, text.replace("#n", str(n)))

    def per_s(self, ind, text):
        """One line per state of the lane: ``#n`` its register suffix, ``#s`` its index in memory."""
        for n in range(self.NL):
            self(ind, text.replace("#n", str(n)).replace("#s", self.sidx(n)))


def _index(src, ind, name, expr):
    """Emit ``name = expr``, widened to int64 when the kernel's ``I64`` flag is set."""
    src(ind, f"{name} = {expr}")
    src(ind, "if I64:")
    src(ind + 1, f"{name} = {name}.to(tl.int64)")


def _bq(src, j) -> str:
    return f"bq{j}" if src.split > 1 else f"bo{j}"


def _step(src, ind, j, s_expr, what):
    """Emit the per-step index math and loads for scan-order step ``s_expr`` of the chunk, suffix j
    (B and C: the lane's ``src.NL`` states)."""
    _step_index(src, ind, j, s_expr)
    _step_loads(src, ind, j, what)


def _step_index(src, ind, j, s_expr):
    """Emit the index math of scan-order step ``s_expr`` of the chunk (suffix j): its sequence position, masks
    and offsets."""
    src(ind, f"s{j} = {s_expr}")
    src(ind, f"tp{j} = c * T + s{j} + REV * (T - 1 - 2 * s{j})")
    src(ind, f"tm{j} = tp{j} < L")
    _index(src, ind, f"row{j}", f"b * L + _seq_positions(tp{j}, n_b, n_c, s_a, s_b, s_c, mul_b, shr_b, mul_c, shr_c)")
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
        src(ind + 1, f"dt{j} = tl.where(m{j}, _softplus(raw{j}), 0.0)")
        src(ind, "else:")
        src(ind + 1, f"dt{j} = tl.where(m{j}, raw{j}, 0.0)")
    if "dy" in what:
        src(ind, f"dy{j} = tl.load(dout + off{j}, mask=m{j}, other=0.0).to(tl.float32)")
        src(ind, "if HAS_Z:")
        src(ind + 1, f"zz{j} = tl.load(z + off{j}, mask=m{j}, other=0.0).to(tl.float32)")
        src(ind + 1, f"sz{j} = tl.sigmoid(zz{j})")
        src(ind + 1, f"do{j} = dy{j}")
        src(ind + 1, f"dy{j} = dy{j} * zz{j} * sz{j}")
    if src.split > 1 and ("B" in what or "C" in what):
        src(ind, f"bq{j} = bo{j} + part * {src.NL}")  # this lane's states of the step
    _load_bc(src, ind, j, what)


def _load_bc(src, ind, j, what):
    """Emit the loads of step j's B and / or C (those in ``what``) for the lane's states; needs ``_step``'s
    index variables of that step."""
    for name, ptr in (("B", "Bm"), ("C", "Cm")):
        if name in what:
            _load_states(src, ind, f"{name}{j}_", f"{ptr} + {_bq(src, j)}", f"tm{j}", src.NL)


_V4 = ("tl.inline_asm_elementwise('ld.global.nc.v4.b32 {{$0, $1, $2, $3}}, [$4];', '=r,=r,=r,=r,l', [{p}], "
       "dtype=(tl.int32, tl.int32, tl.int32, tl.int32), is_pure=True, pack=1)")


def _load_states(src, ind, out, ptr, mask, N):
    """Emit the loads of one step's N values of B or C as fp32 scalars ``{out}{n}``.

    VEC_BC = 0: N scalar loads (masked). 1 (bf16) / 2 (fp32): 16-byte vector loads through inline PTX,
    8 resp. 4 values each, bf16 unpacked by shifts; the caller guarantees 16-byte alignment. Steps past
    the end load row 0 (their index is clamped) instead of zeros: harmless, their dt and dy are 0."""
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
    src.per_n(ind + 1, f"{out}#n = tl.load({ptr} + #n, mask={mask}, other=0.0).to(tl.float32)", N)


def _shfl(expr: str, mask: int) -> str:
    """Source of a warp butterfly shuffle (``shfl.sync.bfly``) of an fp32 (BD,) tensor."""
    return (f"tl.inline_asm_elementwise('shfl.sync.bfly.b32 $0, $1, {mask}, 0x1f, 0xffffffff;', '=r,r', "
            f"[{expr}], dtype=tl.float32, is_pure=True, pack=1)")


_PF = ("tl.inline_asm_elementwise('prefetch.global.{lvl} [$1]; mov.u32 $0, 0;', '=r,l', [{p}], dtype=tl.int32, "
       "is_pure=False, pack=1)")


def _prefetch(src, ind, ptrs):
    """Emit cache prefetches of per-lane pointer expressions (PTX ``prefetch.global``, no registers held): into L1
    with the constexpr ``PF == 2``, into L2 with ``PF == 1``, nothing with 0 (the interpreter runs no PTX).
    ``ptrs``: (pointer expression, condition or None; "X and Y" nests the conditions)."""
    for lvl, mode in (("L2", 1), ("L1", 2)):
        src(ind, f"{'if' if mode == 1 else 'elif'} PF == {mode}:")
        for p, cond in ptrs:
            k = ind + 1
            for c in (cond.split(" and ") if cond else []):
                src(k, f"if {c}:")
                k += 1
            src(k, "pf_ = " + _PF.format(lvl=lvl, p=p))


_PF_ROWS = {"u": "u", "dy": "dout", "z": "z", "acc": "acc", "y_acc": "y_acc", "du_acc": "du_acc"}


def _prefetch_steps(src, ind, s_expr, what):
    """Prefetch the lines that the walk loads later for chunk steps ``s_expr`` (per lane: each lane takes one
    step): ``what`` maps the tensors ("u", "dt", "dy" = dout, "z", "B", "C", "acc", "y_acc", "du_acc") to the
    condition under which they are loaded (or None). Only this program's channel block; steps past the end
    of the sequence fetch row 0."""
    if src.split > 1:
        return  # lanes hold parts of channels: not prefetched (split is opt-in and slower anyway)
    src(ind, "if PF:")
    ind += 1
    src(ind, f"pfs = {s_expr}")
    src(ind, "pft = c * T + pfs + REV * (T - 1 - 2 * pfs)")
    _index(src, ind, "pfr", "b * L + _seq_positions(pft, n_b, n_c, s_a, s_b, s_c, mul_b, shr_b, mul_c, shr_c)")
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


def _lane_setup(src, ind, N):
    """Lane id (PTX ``%laneid``), its bits, and where the channel sums of :func:`_bfly` land: lane l
    holds the sum of state ``lane_n``; ``lane_w`` marks one writer per state. With the states split over
    ``src.split`` lanes the low lane bits are the part (see :func:`_gen`)."""
    split = src.split
    NL = N // split
    p = NL.bit_length() - 1
    src(ind, "lane = tl.inline_asm_elementwise('mov.u32 $0, %laneid;', '=r,r', [d], dtype=tl.int32, "
             "is_pure=True, pack=1)")
    for m in _channel_bits(split):
        src(ind, f"lb{m} = (lane & {m}) != 0")
    if split > 1:
        src(ind, f"lane_n = (lane & {split - 1}) * {NL} + ((lane >> {5 - p}) & {NL - 1})")
    else:
        src(ind, f"lane_n = lane >> {5 - p}")  # the state whose channel sum this lane holds
    src(ind, f"lane_w = (lane & {((1 << (5 - p)) - 1) & ~(split - 1)}) == 0")  # one writer per state


def _channel_bits(split: int) -> list:
    """Lane-id bits that run over channels (high to low); the bits below ``split`` index the state part."""
    return [m for m in (16, 8, 4, 2, 1) if m >= split]


def _bfly(src, ind, vals, out):
    """Sum each of the len(vals) per-lane values over the warp's channel lanes with a butterfly
    reduce-scatter: 16+8+..+1 shuffles for 16 values on 32 channel lanes, instead of 5 per value.
    Afterwards lane l holds the sum of value ``lane_n`` (see :func:`_lane_setup`)."""
    vals = list(vals)
    bits = _channel_bits(src.split)
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


def _part_sum(src, ind, x):
    """``x`` summed over the lanes that share a channel (in place; nothing when a lane holds all states):
    butterfly shuffles over the part bits (SHFL), else a reshape to (channels, parts) and ``tl.sum``."""
    if src.split == 1:
        return
    src(ind, "if SHFL:")
    m = 1
    while m < src.split:
        src(ind + 1, f"{x} = {x} + {_shfl(x, m)}")
        m *= 2
    src(ind, "else:")
    shape = f"(BD // {src.split}, {src.split})"
    src(ind + 1, f"{x} = tl.reshape(tl.broadcast_to(tl.sum(tl.reshape({x}, {shape}), 1)[:, None], {shape}), (BD,))")


def _bfly_ok(N: int) -> bool:
    return N & (N - 1) == 0 and N <= 32


def _channel_sums(src, ind, vals, scal, vec):
    """Sums over the warp's channels of the lane's per-state values: butterfly into ``vec`` (SHFL) or
    one ``tl.sum`` per state into ``scal{state}`` (per part of the lanes when the states are split)."""
    if _bfly_ok(src.NL * src.split):
        src(ind, "if SHFL:")
        _bfly(src, ind + 1, vals, vec)
        src(ind, "else:")
        ind += 1
    for q in range(src.split):
        for n, v in enumerate(vals):
            x = v if src.split == 1 else f"tl.where(part == {q}, {v}, 0.0)"
            src(ind, f"{scal}{q * src.NL + n} = tl.sum({x}, 0)")


def _store_bc(src, ind, ptr, i, scal, vec, N):
    """Emit the dB/dC write of step i: per-state scalars ``scal#n`` (tl.sum path) or one lane vector
    ``vec`` (SHFL path), as fp32 atomics, fp32 partial-slab stores or final-dtype stores."""
    for mode, op in (("ATOMIC_BC", "tl.atomic_add({p}, {v}, mask={m}, sem='relaxed')"),
                     ("PARTIAL_BC", "tl.store({p}, {v}, mask={m})"),
                     (None, "tl.store({p}, ({v}).to(" + ptr + ".dtype.element_ty), mask={m})")):
        src(ind, f"if {mode}:" if mode == "ATOMIC_BC" else (f"elif {mode}:" if mode else "else:"))
        k = ind + 1
        if _bfly_ok(N):
            src(k, "if SHFL:")
            src(k + 1, op.format(p=f"{ptr} + bo{i} + lane_n", v=vec, m=f"tm{i} & lane_w"))
            src(k, "else:")
            k += 1
        src.per_n(k, op.format(p=f"{ptr} + bo{i} + #n", v=f"{scal}#n", m=f"tm{i}"), N)


def _prologue(src, carry_parts):
    src(1, "c = tl.program_id(0)")  # chunks on grid axis 0 (axes 1, 2 stop at 65535)
    src(1, "pid_d = tl.program_id(1)")
    src(1, "b = tl.program_id(2)")
    if src.split > 1:  # lane i: channel i // split, states (i % split) * NL ...
        src(1, "lanes = tl.arange(0, BD)")
        src(1, f"d = pid_d * (BD // {src.split}) + lanes // {src.split}")
        src(1, f"part = lanes % {src.split}")
    else:
        src(1, "ln = tl.arange(0, BD)")
        src(1, "d = pid_d * BD + ln")
    src(1, "dmask = d < D")
    src(1, "abase = (k * D + d) * N" + (f" + part * {src.NL}" if src.split > 1 else ""))
    src.per_s(1, f"A2_#n = tl.load(A + abase + #n, mask=dmask, other=0.0) * {LOG2E!r}")
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
        src.per_s(1, f"{var}#n = tl.load(st + (cb{part} * N + #s) * D + d, mask=dmask & cv{part}, other=0.0)"
                     ".to(tl.float32)")


def _y_of_step(src, ind, j, u_expr):
    """``y{j} = D u + sum_n h_n C_n`` of the step (over all the channel's states: part sum when split)."""
    if src.split == 1:
        src(ind, "if HAS_D:")
        src(ind + 1, f"y{j} = dsk * {u_expr}")
        src(ind, "else:")
        src(ind + 1, f"y{j} = tl.zeros([BD], dtype=tl.float32)")
        src.per_s(ind, f"y{j} += h#n * C{j}_#n")
        return
    src(ind, f"y{j} = " + " + ".join(f"h{n} * C{j}_{n}" for n in range(src.NL)))
    _part_sum(src, ind, f"y{j}")
    src(ind, "if HAS_D:")
    src(ind + 1, f"y{j} += dsk * {u_expr}")


def _gradient_setup(src, ind, N, slab_ptrs):
    """Emit what a kernel that writes dB / dC needs first: its channel block's slab of ``slab_ptrs`` (PARTIAL_BC),
    the skip weight ``dsk`` (HAS_D) and the lane bookkeeping of the butterfly (SHFL)."""
    src(ind, "if PARTIAL_BC:")
    _index(src, ind + 1, "slab", "pid_d * (tl.num_programs(2) * L * K * N)")
    for p in slab_ptrs:
        src(ind + 1, f"{p} += slab")
    src(ind, "if HAS_D:")
    src(ind + 1, "dsk = tl.load(Dskip + k * D + d, mask=dmask, other=0.0)")
    if _bfly_ok(N):
        src(ind, "if SHFL:")
        _lane_setup(src, ind + 1, N)


def _y_dz_dc(src, ind, i, N):
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
    _channel_sums(src, ind, [f"dy{i} * h{n}" for n in range(src.NL)], f"dc{i}_", f"rc{i}")
    _store_bc(src, ind, "dC", i, f"dc{i}_", f"rc{i}", N)


def _gen(N: int, S: int, SF: int, reuse_steps: bool = False, split: int = 1) -> str:
    if SF % S:
        raise ValueError(f"the walks' unroll SF={SF} must be a multiple of the sub-chunk S={S} (the summary writes "
                         "the sub-chunk states)")
    if split < 1 or N % split or split & (split - 1):
        raise ValueError(f"the states (N={N}) must split evenly over a power-of-two number of lanes, not {split}")
    src = _Src(split, N // split)
    # ---------------------------------------------------------------- summary
    # TRUE_SCR (backward with the forward's carries ``cst``): the forward walk starts from the true carry, so the
    # scratch holds true states, no forward summary is written, and with DC_SUM this walk also gives y / dz / dC.
    src(0, "def seq_summary(u, delta, Bm, Cm, A, delta_bias, z, dout, st, dts, scr, cdt, L, D, K, nC, P, n_b, n_c,")
    src(0, "                s_a, s_b, s_c, mul_b, shr_b, mul_c, shr_c, k, N: tl.constexpr, REV,")
    src(0, "                HAS_BIAS: tl.constexpr,")
    src(0, "                SOFTPLUS: tl.constexpr, BWD: tl.constexpr, HAS_Z: tl.constexpr, T,")
    src(0, "                BD: tl.constexpr, I64: tl.constexpr, SCR: tl.constexpr, VEC_BC: tl.constexpr,")
    src(0, "                cst=None, Dskip=None, y_acc=None, dz_out=None, dC=None, ACC_IN=0, FINAL=0,")
    src(0, "                TRUE_SCR: tl.constexpr = False, DC_SUM: tl.constexpr = False, HAS_D: tl.constexpr = False,")
    src(0, "                ATOMIC_BC: tl.constexpr = False, PARTIAL_BC: tl.constexpr = False,")
    src(0, "                SHFL: tl.constexpr = False, PF: tl.constexpr = 0, PFD=1):")
    _prologue(src, [])
    src(1, "if TRUE_SCR:")
    src(2, "cin0 = c - 1 + 2 * REV")
    src(2, "cv0 = (cin0 >= 0) & (cin0 < nC)")
    src(2, "cin0 = tl.minimum(tl.maximum(cin0, 0), nC - 1)")
    _index(src, 2, "cb0", "(b * K + k) * nC + cin0")
    src.per_s(2, "h#n = tl.load(cst + (cb0 * N + #s) * D + d, mask=dmask & cv0, other=0.0)")
    src(1, "else:")
    src.per_s(2, "h#n = tl.zeros([BD], dtype=tl.float32)")
    src(1, "if DC_SUM:")
    _gradient_setup(src, 2, N, ("dC",))
    src(1, "sdt = tl.zeros([BD], dtype=tl.float32)")
    src(1, "if SCR:")
    _index(src, 2, "sc0", f"(b * nC + c) * (T // {S})")
    src(1, f"for q0 in range(0, T, {SF}):")
    _prefetch_steps(src, 2, f"tl.minimum(q0 + PFD * {SF} + ln % {SF}, T - 1)",
                    {"u": None, "dt": None, "B": None, "dy": "DC_SUM", "z": "DC_SUM and HAS_Z", "C": "DC_SUM",
                     "y_acc": "DC_SUM and HAS_Z and ACC_IN"})
    for j in range(SF):
        _step(src, 2, j, f"q0 + {j}", ("u", "dt", "B"))
    src(2, "if DC_SUM:")
    for j in range(SF):
        _step_loads(src, 3, j, ("dy", "C"))
    for j in range(SF):
        if j % S == 0:  # state (zero-start, or true with TRUE_SCR) at each sub-chunk start, for the backward's walk 2
            src(2, "if SCR:")
            src(3, f"sq = sc0 + q0 // {S} + {j // S}")
            src.per_s(3, "tl.store(scr + (sq * N + #s) * D + d, h#n, mask=dmask)")
            src(3, "if not TRUE_SCR:")  # and the running dt sum that decays the carry
            src(4, "tl.store(cdt + sq * D + d, sdt, mask=dmask)")
        src(2, f"dtu{j} = dt{j} * u{j}")
        src(2, f"sdt += dt{j}")
        src.per_s(2, f"h#n = tl.exp2(dt{j} * A2_#n) * h#n + dtu{j} * B{j}_#n")
        src(2, "if DC_SUM:")
        _y_dz_dc(src, 3, j, N)
    src(1, "if not TRUE_SCR:")
    _index(src, 2, "sb", "((b * P) * K + k) * nC + c")
    src.per_s(2, "tl.store(st + (sb * N + #s) * D + d, h#n, mask=dmask)")
    _index(src, 1, "db", "(b * K + k) * nC + c")
    src(1, "tl.store(dts + db * D + d, sdt, mask=dmask)")
    src(1, "if BWD:")
    src.per_s(2, "g#n = tl.zeros([BD], dtype=tl.float32)")
    src(2, f"for q0 in range(0, T, {SF}):")
    _prefetch_steps(src, 3, f"tl.maximum(T - 1 - (q0 + PFD * {SF} + ln % {SF}), 0)",
                    {"dt": None, "dy": None, "z": "HAS_Z", "C": None})
    for j in range(SF):
        _step(src, 3, j, f"T - 1 - (q0 + {j})", ("dt", "dy", "C"))
    for j in range(SF):
        src.per_s(3, f"g#n = tl.exp2(dt{j} * A2_#n) * (dy{j} * C{j}_#n + g#n)")
    _index(src, 2, "gb", "((b * P + 1) * K + k) * nC + c")
    src.per_s(2, "tl.store(st + (gb * N + #s) * D + d, g#n, mask=dmask)")
    src(0, "")
    # ---------------------------------------------------------------- forward
    src(0, "def seq_fwd(u, delta, A, Bm, Cm, Dskip, delta_bias, z, st, acc, out, L, D, K, nC, n_b, n_c, s_a, s_b,")
    src(0, "            s_c, mul_b, shr_b, mul_c, shr_c, k, N: tl.constexpr, REV, HAS_D: tl.constexpr,")
    src(0, "            HAS_BIAS: tl.constexpr,")
    src(0, "            HAS_Z: tl.constexpr, SOFTPLUS: tl.constexpr, HAS_CARRY: tl.constexpr,")
    src(0, "            ACC_IN, FINAL, T, BD: tl.constexpr,")
    src(0, "            I64: tl.constexpr, VEC_BC: tl.constexpr, SHFL: tl.constexpr, PF: tl.constexpr = 0, PFD=1):")
    src(1, "P = 1")
    _prologue(src, [(0, "h", +1)])
    src(1, "if HAS_D:")
    src(2, "dsk = tl.load(Dskip + k * D + d, mask=dmask, other=0.0)")
    src(1, f"for q0 in range(0, T, {SF}):")
    _prefetch_steps(src, 2, f"tl.minimum(q0 + PFD * {SF} + ln % {SF}, T - 1)",
                    {"u": None, "dt": None, "B": None, "C": None, "acc": "ACC_IN", "z": "FINAL and HAS_Z"})
    for j in range(SF):
        _step(src, 2, j, f"q0 + {j}", ("u", "dt", "B", "C"))
    for j in range(SF):
        src(2, f"dtu{j} = dt{j} * u{j}")
        src.per_s(2, f"h#n = tl.exp2(dt{j} * A2_#n) * h#n + dtu{j} * B{j}_#n")
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
    # ---------------------------------------------------------------- backward
    src(0, "def seq_bwd(u, delta, A, Bm, Cm, Dskip, delta_bias, z, dout, st, scr, cdt, du_acc, y_acc, du_out, dz_out,")
    src(0, "            ddelta, dB, dC, dA_p, dD_p, dbias_p, L, D, K, nC, n_b, n_c, s_a, s_b, s_c,")
    src(0, "            mul_b, shr_b, mul_c, shr_c, k,")
    src(0, "            N: tl.constexpr, REV, HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr,")
    src(0, "            HAS_Z: tl.constexpr, SOFTPLUS: tl.constexpr, HAS_CARRY: tl.constexpr,")
    src(0, "            ACC_IN, FINAL, ATOMIC_BC: tl.constexpr,")
    src(0, "            PARTIAL_BC: tl.constexpr, T, BD: tl.constexpr, I64: tl.constexpr,")
    src(0, "            SHFL: tl.constexpr, SCR_READY: tl.constexpr, VEC_BC: tl.constexpr, PF: tl.constexpr = 0,")
    src(0, "            PFD=1, TRUE_SCR: tl.constexpr = False, DC_SUM: tl.constexpr = False):")
    src(1, "P = 2")
    _prologue(src, [(0, "h", +1), (1, "gp", -1)])
    _gradient_setup(src, 1, N, ("dB", "dC"))
    src(1, f"MS = T // {S}")
    _index(src, 1, "sc0", "(b * nC + c) * MS")
    # walk 1: states at sub-chunk starts -> scratch (skipped when seq_summary wrote them: SCR_READY)
    src(1, "if not SCR_READY:")
    src(2, "for j in range(MS):")
    src.per_s(3, "tl.store(scr + ((sc0 + j) * N + #s) * D + d, h#n, mask=dmask)")
    for i in range(S):
        _step(src, 3, i, f"j * {S} + {i}", ("u", "dt", "B"))
        src.per_s(3, f"h#n = tl.exp2(dt{i} * A2_#n) * h#n + (dt{i} * u{i}) * B{i}_#n")
    # walk 2
    src.per_s(1, "dA#n = tl.zeros([BD], dtype=tl.float32)")
    src(1, "dDacc = tl.zeros([BD], dtype=tl.float32)")
    src(1, "dbacc = tl.zeros([BD], dtype=tl.float32)")
    src(1, "for jj in range(MS):")
    src(2, "j = MS - 1 - jj")
    if src.split == 1:  # the lines of sub-chunk j - PFD: its scratch states, dt sums and step inputs
        src(2, "if PF:")
        src(3, "jn = tl.maximum(j - PFD, 0)")
        _prefetch(src, 3, [(f"scr + ((sc0 + jn) * N + (ln + {n0}) % N) * D + pid_d * BD", None)
                           for n0 in range(0, N, 32)]
                  + [("cdt + (sc0 + jn) * D + pid_d * BD", "SCR_READY and HAS_CARRY and not TRUE_SCR")])
        _prefetch_steps(src, 3, f"jn * {S} + ln % {S}",
                        {"u": None, "dt": None, "dy": None, "z": "HAS_Z", "B": None, "C": None,
                         "y_acc": "not DC_SUM and HAS_Z and ACC_IN", "du_acc": "ACC_IN"})
    src.per_s(2, "h#n = tl.load(scr + ((sc0 + j) * N + #s) * D + d, mask=dmask, other=0.0)")
    # scratch from seq_summary holds the zero-start state (unless TRUE_SCR): add the decayed carry-in
    src(2, "if SCR_READY:")
    src(3, "if not TRUE_SCR:")
    src(4, "if HAS_CARRY:")
    src(5, "cdj = tl.load(cdt + (sc0 + j) * D + d, mask=dmask, other=0.0)")
    src.per_s(5, "h#n += tl.exp2(A2_#n * cdj) * tl.load(st + (cb0 * N + #s) * D + d, mask=dmask & cv0, other=0.0)")
    NL = src.NL
    for i in range(S):  # forward recompute: keep h_{t-1}; dC
        _step(src, 2, i, f"j * {S} + {i}", ("u", "dt", "dy", "B", "C"))
        src(2, f"dtu{i} = dt{i} * u{i}")
        src.per_s(2, f"hp{i}_#n = h#n")
        src.per_s(2, f"h#n = tl.exp2(dt{i} * A2_#n) * h#n + dtu{i} * B{i}_#n")
        src(2, "if not DC_SUM:")  # else the summary walk did them
        _y_dz_dc(src, 3, i, N)
    for i in reversed(range(S)):  # adjoint, backwards through the sub-chunk
        if reuse_steps:  # keep the forward recompute's per-step values; reload only B and C
            _load_bc(src, 2, i, ("B", "C"))
        else:
            _step(src, 2, i, f"j * {S} + {i}", ("u", "dt", "dy", "B", "C"))
        src(2, f"dtu{i} = dt{i} * u{i}")
        src(2, f"sgB{i} = tl.zeros([BD], dtype=tl.float32)")
        src(2, f"xa{i} = tl.zeros([BD], dtype=tl.float32)")
        for n in range(NL):
            src(2, f"g = dy{i} * C{i}_{n} + gp{n}")
            src(2, f"gp{n} = tl.exp2(dt{i} * A2_{n}) * g")
            src(2, f"x = gp{n} * hp{i}_{n}")
            src(2, f"xa{i} += x * A2_{n}")
            src(2, f"dA{n} += x * dt{i}")
            src(2, f"sgB{i} += g * B{i}_{n}")
            src(2, f"pb{i}_{n} = g * dtu{i}")
        _channel_sums(src, 2, [f"pb{i}_{n}" for n in range(NL)], f"db{i}_", f"rb{i}")
        _store_bc(src, 2, "dB", i, f"db{i}_", f"rb{i}", N)
        _part_sum(src, 2, f"xa{i}")
        _part_sum(src, 2, f"sgB{i}")
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
    src.per_s(1, "tl.store(dA_p + (pb * N + #s) * D + d, dA#n, mask=dmask)")
    src(1, "if HAS_D:")
    src(2, "tl.store(dD_p + pb * D + d, dDacc, mask=dmask)")
    src(1, "if HAS_BIAS:")
    src(2, "tl.store(dbias_p + pb * D + d, dbacc, mask=dmask)")
    return "\n".join(src.lines) + "\n"


_CACHE: dict = {}
# D, the lengths, the geometry (with its division constants) and the per-direction flags (REV, ACC_IN, FINAL) and the
# chunk length T (fewer compiled variants)
# stay unspecialised: every (BD,) tensor then has one element per
# thread per 32 channels, all in one layout (no vectorised loads that would need conversions).
_NOSPEC = ["L", "D", "K", "nC", "P", "n_b", "n_c", "s_a", "s_b", "s_c", "mul_b", "shr_b", "mul_c", "shr_c", "k", "REV",
           "ACC_IN", "FINAL", "T", "PFD"]


def kernels(N: int, S: int = 4, SF: int = 4, reuse_steps: bool = False, split: int = 1) -> dict:
    """The generated kernels for state size N (cached): {"summary", "fwd", "bwd", "S", "split"}; ``split``
    lanes share a channel, each holding N / split of its states."""
    key = (N, S, SF, reuse_steps, split)
    if key not in _CACHE:
        src = _gen(N, S, SF, reuse_steps, split)
        fname = (f"<nnunet_mamba.kernels.triton_seq N={N} S={S} SF={SF}{' reuse' if reuse_steps else ''}"
                 f"{f' split={split}' if split > 1 else ''}>")
        linecache.cache[fname] = (len(src), None, src.splitlines(True), fname)
        ns = {"tl": tl, "triton": triton, "_seq_positions": _seq_positions, "_softplus": _softplus,
              "__name__": __name__}
        exec(compile(src, fname, "exec"), ns)
        out = {}
        for name, fn in (("summary", "seq_summary"), ("fwd", "seq_fwd"), ("bwd", "seq_bwd")):
            f = ns[fn]
            names = f.__code__.co_varnames[:f.__code__.co_argcount]
            out[name] = triton.jit(do_not_specialize=[a for a in _NOSPEC if a in names])(f)
        out["S"], out["split"] = S, split
        _CACHE[key] = out
    return _CACHE[key]
