"""Where the first compiled training step's time goes, per network (a benchmark, not a test).

Per network and plan of ``train.py``, two fresh processes, each with empty Inductor and Triton caches (a fresh
machine's first run; nnU-Net compiles the network before its first step on CUDA):

* ``cold``: the torch.compile'd training step from the start; ``first_step_s`` is what a user waits;
* ``split``: two eager steps first, then the compiled one. The first eager step compiles this package's Triton scan
  kernels (and pays cuDNN's first-call set-up), so ``eager_first_s - eager_step_s`` bounds their compile time (for
  ``resenc_m`` it is the set-up alone); the compiled step then compiles the Inductor graph only
  (``inductor_first_s``);
* ``ahead``: as our trainers start: ``kernels.compile_training_step`` (one no-grad forward of the eager network that
  compiles every scan kernel of the step at once, ``ahead_s``), then the compiled step (``ahead_first_s``); the
  user waits ``ahead_s + ahead_first_s``.

Also per process: Dynamo's unique graphs, graph breaks and recompiles, and the compiled step time (median of
``--steps``). Rows run one after another (compiling is CPU work, a parallel row would slow it). Writes
``compile_<card>.json`` and ``.md`` into ``--out`` after every row.

    python3 benchmarks/compile_time.py --plans hippocampus_resenc_m --networks resenc_m mamba_resenc --out $OUT
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

import ab  # benchmarks/ab.py
import train  # benchmarks/train.py: plans, networks, loss

MODES = ("cold", "split", "ahead")


def child(spec: str, plan_name: str, mode: str, steps: int) -> dict:
    from torch._dynamo.utils import counters
    p = train.PLANS[plan_name]
    torch.manual_seed(0)
    net = train.make_network(spec, p).cuda()
    opt = torch.optim.SGD(net.parameters(), lr=1e-2, momentum=0.99, nesterov=True)
    x, y = train.make_batch(p, "cuda")

    def step(model) -> float:
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = train.ds_loss(model(x), y, p["regions"])
        loss.backward()
        opt.step()
        torch.cuda.synchronize()
        return time.perf_counter() - t0

    row = {"network": spec, "plan": plan_name, "mode": mode, "batch": p["batch"], "patch": list(p["patch"])}
    if mode == "split":
        row["eager_first_s"] = step(net)
        row["eager_step_s"] = step(net)
    if mode == "ahead":  # what our trainers do before their first step
        from nnunet_mamba.kernels import compile_training_step
        t0 = time.perf_counter()
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
            row["ahead_kernels"] = compile_training_step(lambda: net(x))
        torch.cuda.synchronize()
        row["ahead_s"] = time.perf_counter() - t0
    compiled = torch.compile(net)
    row[{"cold": "compiled_first_s", "split": "inductor_first_s", "ahead": "ahead_first_s"}[mode]] = step(compiled)
    row["compiled_step_ms"] = 1e3 * statistics.median(step(compiled) for _ in range(steps))
    row["graphs"] = counters["stats"]["unique_graphs"]
    row["graph_breaks"] = sum(counters["graph_break"].values())
    row["recompiles"] = sum(v for k, v in counters["recompiles"].items()) if "recompiles" in counters else 0
    import nnunet_mamba
    row["nnunet_mamba_file"] = nnunet_mamba.__file__
    return row


def run_child(spec, plan_name, mode, args) -> dict:
    """One process with empty Inductor and Triton caches of its own."""
    caches = tempfile.mkdtemp(prefix="compile_time_")
    env = {"TORCHINDUCTOR_CACHE_DIR": os.path.join(caches, "inductor"),
           "TRITON_CACHE_DIR": os.path.join(caches, "triton")}
    cmd = [sys.executable, __file__, "--one", spec, plan_name, mode, "--steps", str(args.steps)]
    row = ab.run_row(cmd, timeout=args.timeout, env=env)
    return row if "network" in row else dict(row, network=spec, plan=plan_name, mode=mode)


def merge(rows: list) -> list:
    """One line per (plan, network): the cold and the split process side by side."""
    table = {}
    for r in rows:
        t = table.setdefault((r["plan"], r["network"]), {"plan": r["plan"], "network": r["network"]})
        if "error" in r:
            t.setdefault("errors", []).append(f"{r['mode']}: {r['error']}")
            continue
        t.update({k: v for k, v in r.items() if k not in ("mode", "nnunet_mamba_file", "compiled_step_ms",
                                                           "graphs", "graph_breaks", "recompiles")})
        t[f"{r['mode']}_step_ms"] = r["compiled_step_ms"]
        t[f"{r['mode']}_graphs"] = (r["graphs"], r["graph_breaks"], r["recompiles"])
    return list(table.values())


def write(args, meta, rows) -> list:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tag = meta["card"].lower().replace(" ", "_") + (f"_{args.tag}" if args.tag else "")
    (out / f"compile_{tag}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    f = lambda v: "-" if v is None else f"{v:.1f}"  # noqa: E731
    lines = [f"# First compiled training step on {meta['card']}", "",
             f"torch {meta['torch']}, triton {meta['triton']}, commit {meta['commit']}; bf16 AMP, SGD; every process "
             "starts with empty Inductor and Triton caches", "",
             "| plan | network | first step, cold (s) | eager first step (s) | eager step (s) | Triton kernels + "
             "set-up (s) | Inductor after eager (s) | kernels ahead (s) | first step after them (s) | compiled step ms "
             "| graphs / breaks / recompiles |",
             "|" + "---|" * 11]
    for t in merge(rows):
        kern = (t["eager_first_s"] - t["eager_step_s"]) if "eager_first_s" in t else None
        lines.append(" | ".join(["", t["plan"], t["network"], f(t.get("compiled_first_s")), f(t.get("eager_first_s")),
                                 f(t.get("eager_step_s")), f(kern), f(t.get("inductor_first_s")),
                                 f(t.get("ahead_s")), f(t.get("ahead_first_s")), f(t.get("cold_step_ms")),
                                 str(t.get("cold_graphs", "-")), ""]).strip())
        if t.get("errors"):
            lines[-1] += " " + "; ".join(t["errors"])
    (out / f"compile_{tag}.md").write_text("\n".join(lines) + "\n")
    return lines


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--networks", nargs="+", default=["resenc_m", "mamba_resenc", "umamba_bot", "umamba_enc",
                                                       "segmamba"])
    ap.add_argument("--plans", nargs="+", default=["hippocampus_resenc_m"], choices=list(train.PLANS))
    ap.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    ap.add_argument("--steps", type=int, default=5, help="compiled steps timed after the first")
    ap.add_argument("--timeout", type=int, default=600, help="seconds per process")
    ap.add_argument("--commit", default=None)
    ap.add_argument("--tag", default="")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    ap.add_argument("--one", nargs=3, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print("ROW " + json.dumps(child(*args.one, args.steps)), flush=True)
        return
    import triton
    meta = {"card": torch.cuda.get_device_name(0), "torch": torch.__version__, "triton": triton.__version__,
            "commit": ab.current_commit(args.commit), "cpus": os.cpu_count()}
    rows = []
    for plan_name in args.plans:
        for spec in args.networks:
            for mode in args.modes:
                rows.append(run_child(spec, plan_name, mode, args))
                print(json.dumps(rows[-1]), flush=True)
                lines = write(args, meta, rows)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
