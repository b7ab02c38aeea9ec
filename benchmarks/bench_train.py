"""Training throughput per method (images/s through the network, all roles counted) and the share
of step time spent waiting for data, on the real NIH sample, with the preprocessed-image cache.

    .venv/bin/python benchmarks/bench_train.py [--methods baseline,scalp,...] [--device cpu|cuda]
        [--input-size 224] [--batch-size 16] [--workers 2] [--steps 12] [--json OUT]

Each method runs `fit` for `--steps` optimiser steps twice: first with an empty cache (cold: every
image decoded from PNG), then again on the filled cache (warm: what every epoch after the first
sees). Figures are medians over the steps after the first two (warm-up). Two-stage methods are
measured in their pre-training stage (their main cost), CIA-Net in its main stage, KACL before its
first radiomics refresh (the refresh is a per-epoch cost of its own). "busy" = 1 - data wait:
the share of step time the device computes. The issue's floor on a GPU: busy >= 85% for ResNet-50
at 512x512. Without `--data`, the NIH sample beside the checkout is used.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_description  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "nih-sample"


# CIA-Net's first stage trains only the small alignment network: measure its main stage instead.
METHOD_SETS = {"cianet": ["pretrain_epochs=0"]}


def run_once(method: str, args, cache: Path, out: Path, name: str) -> dict:
    from cxrviewer.trainer.config import resolve_config
    from cxrviewer.trainer.loop import fit

    flags = {"data": args.data, "method": method, "input_size": args.input_size, "batch_size": args.batch_size,
             "workers": args.workers, "cache": str(cache), "output": str(out), "name": name, "device": args.device,
             "max_steps": args.steps, "log_every": 1, "checkpoint_every": 0, "max_val_images": 0}
    if args.architecture:
        flags["architecture"] = args.architecture
    config = resolve_config(None, flags, [*METHOD_SETS.get(method, []), *args.set])
    run = fit(config)
    steps = [json.loads(line) for line in (run / "progress.jsonl").read_text().splitlines()]
    steps = [e for e in steps if e["event"] == "step"][2:]
    if not steps:
        return {"images_per_s": None, "data_wait": None}
    return {"images_per_s": statistics.median(e["images_per_s"] for e in steps),
            "data_wait": statistics.median(e["data_wait"] for e in steps), "steps": len(steps)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default="baseline,scalp,kacl,cianet,byol-cam,medaug")
    parser.add_argument("--data", default=f"nih:{DEFAULT_DATA}")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--architecture", default=None, help="override every method's architecture")
    parser.add_argument("--input-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--set", action="append", default=[], help="KEY=VALUE passed to every run")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    if args.data.startswith("nih:") and not Path(args.data[4:]).is_dir():
        print(f"skipped: {args.data[4:]} is not present")
        return 0
    import torch

    device = torch.cuda.get_device_name(0) if args.device == "cuda" else machine_description()
    print(f"device: {device}; input {args.input_size}px, batch {args.batch_size}, workers {args.workers}, "
          f"{args.steps} steps (medians after 2 warm-up steps)")
    print("| method | architecture | cold img/s | cold data wait | warm img/s | warm data wait | warm busy |")
    print("|---|---|---|---|---|---|---|")
    results = {}
    for method in args.methods.split(","):
        from cxrviewer.trainer.methods import get_method

        arch = args.architecture or get_method(method).architecture
        with tempfile.TemporaryDirectory() as tmp:
            cache, out = Path(tmp) / "cache", Path(tmp) / "runs"
            cold = run_once(method, args, cache, out, "cold")
            warm = run_once(method, args, cache, out, "warm")
        results[method] = {"architecture": arch, "cold": cold, "warm": warm}

        def fmt(v, pct=False):
            return "n/a" if v is None else (f"{100 * v:.0f}%" if pct else f"{v:.1f}")
        busy = None if warm["data_wait"] is None else 1 - warm["data_wait"]
        print(f"| {method} | {arch} | {fmt(cold['images_per_s'])} | {fmt(cold['data_wait'], True)} | "
              f"{fmt(warm['images_per_s'])} | {fmt(warm['data_wait'], True)} | {fmt(busy, True)} |", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"device": device, "args": vars(args), "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
