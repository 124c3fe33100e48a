"""The published networks on a GPU: the Triton scan reproduces the originals' recorded outputs, and the networks
train under AMP + torch.compile without a graph break (a check on the device, not a unit test).

For every fixture in tests/fixtures/originals (recorded from the authors' code on CPU):
* float32 forward with the Triton scan: relative error (Frobenius) of each output against the recording;
* the same under bf16 and fp16 autocast (the convolutions then run in half precision: a looser figure);
* ``torch._dynamo.explain`` of the training forward under fp16 autocast (nnU-Net's default): graph count and
  graph breaks, then one compiled (Inductor) forward + backward, checked finite, with its compile time.

    python benchmarks/faithful_gpu_check.py [--compile none|explain|full] [--networks FIXTURE ...] [--out DIR]
Writes faithful_gpu_check.json and prints one line per network; exits 1 if a float32 error exceeds 1e-4 or a
graph breaks.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from test_faithful_networks import FIXTURES, fixture_network, relative_error  # noqa: E402


def outputs(net, x):
    out = net(x)
    return list(out) if isinstance(out, (list, tuple)) else [out]


def check(name: str, device: torch.device, compile_: str) -> dict:
    """``compile_``: "none" (numerics only), "explain" (plus dynamo's graph count), "full" (plus Inductor)."""
    fx = torch.load(FIXTURES / f"{name}.pt", weights_only=True)
    net = fixture_network(name, fx["init_kwargs"]).to(device)
    net.load_state_dict({k: v.float() for k, v in fx["state_dict"].items()})
    net.eval()
    x = fx["input"].to(device)
    row = {"network": name}
    with torch.no_grad():
        row["fp32_rel_err"] = max(relative_error(o.cpu(), r) for o, r in zip(outputs(net, x), fx["outputs"]))
        for m in net.modules():  # the same network with the PyTorch reference scan on the GPU
            if hasattr(m, "backend"):
                m.backend = "reference"
        row["fp32_reference_scan_rel_err"] = max(relative_error(o.cpu(), r)
                                                 for o, r in zip(outputs(net, x), fx["outputs"]))
        for m in net.modules():
            if hasattr(m, "backend"):
                m.backend = None
        for dtype in (torch.bfloat16, torch.float16):
            with torch.autocast("cuda", dtype=dtype):
                errs = [relative_error(o.float().cpu(), r) for o, r in zip(outputs(net, x), fx["outputs"])]
            row[f"{str(dtype)[6:]}_autocast_rel_err"] = max(errs)
    if compile_ == "none":
        return row
    net.train()
    with torch.autocast("cuda", dtype=torch.float16):
        explained = torch._dynamo.explain(net)(x)
    row["graphs"] = explained.graph_count
    row["graph_breaks"] = explained.graph_break_count
    row["break_reasons"] = [str(b.reason)[:200] for b in explained.break_reasons]
    torch._dynamo.reset()
    if compile_ == "explain":
        return row
    compiled = torch.compile(net)
    start = time.time()
    with torch.autocast("cuda", dtype=torch.float16):
        out = outputs(compiled, x)
    loss = sum(o.float().square().mean() for o in out)
    loss.backward()
    torch.cuda.synchronize()
    row["compile_fwd_bwd_s"] = round(time.time() - start, 1)
    row["compiled_finite"] = bool(torch.isfinite(loss)) and all(
        p.grad is None or bool(torch.isfinite(p.grad).all()) for p in net.parameters())
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--compile", choices=["none", "explain", "full"], default="full",
                    help="none: numerical checks only; explain: plus graph breaks; full: plus one compiled step")
    ap.add_argument("--networks", nargs="+", default=None, help="fixture names (default: all)")
    args = ap.parse_args()
    # float32 means float32: no TF32 in convolutions and matrix products
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    device = torch.device("cuda")
    names = args.networks or sorted(p.stem for p in FIXTURES.glob("*.pt"))
    rows, ok = [], True
    for name in names:
        try:
            row = check(name, device, args.compile)
        except Exception as e:  # keep the other networks' figures
            row = {"network": name, "error": f"{type(e).__name__}: {str(e)[:300]}"}
        rows.append(row)
        print(json.dumps(row), flush=True)
        ok &= "error" not in row and row["fp32_rel_err"] <= 1e-4 and row.get("graph_breaks", 0) == 0 \
            and row.get("compiled_finite", True)
    meta = {"card": torch.cuda.get_device_name(0), "torch": torch.__version__, "cuda": torch.version.cuda}
    try:
        import triton
        meta["triton"] = triton.__version__
    except ImportError:
        pass
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"faithful_gpu_check_{args.compile}.json").write_text(
        json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    print("ALL PASS" if ok else "FAILURES")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
