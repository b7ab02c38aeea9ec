"""Full analysis of one 512x512 image on the CPU: 8 probabilities + 8 Grad-CAMs with
`cxrviewer.explain` (one forward, the tail on 8 copies, one backward through the tail) against
pytorch-grad-cam making the same 8 maps (8 calls, one per ClassifierOutputTarget), side by side.

    .venv/bin/python benchmarks/bench_cams.py [--repeat 5] [--archs resnet18,resnet50-ta]
                                              [--threads N] [--no-scorecam] [--json OUT]

Both sides end at 8 maps min-max scaled and resized to the input (pytorch-grad-cam's output; ours
adds `cams_to_image`) and the probabilities. Runs alternate ours / reference after one warm-up
each; medians are reported. Also: the plain forward (inference only), Grad-CAM++ and Score-CAM
(one run: C masked forwards, all 8 classes together) for ours. Floor (the issue): ours >= 5x faster.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_description  # noqa: E402

FLOOR = 5.0
SIZE = 512


def chest_like(size: int = 1024):
    """A deterministic 8-bit picture with chest-like large-scale structure (timing only)."""
    import numpy as np

    yy, xx = np.mgrid[-1:1:size * 1j, -1:1:size * 1j]
    lungs = np.exp(-(((np.abs(xx) - 0.45) / 0.25) ** 2 + (yy / 0.6) ** 2))
    picture = 200 - 120 * lungs + 20 * np.sin(9 * yy) * (np.abs(xx) > 0.2)
    rng = np.random.default_rng(0)
    return np.clip(picture + rng.normal(0, 4, picture.shape), 0, 255).astype(np.uint8)


def timed(fn, repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def bench_arch(arch: str, repeat: int, scorecam: bool) -> dict:
    import torch
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from cxrviewer.explain import cams_to_image, compute_cams_with_logits
    from cxrviewer.models import create_model

    torch.manual_seed(0)
    model, spec = create_model(arch, input_size=(SIZE, SIZE))
    x = spec.preprocess(chest_like())
    k = len(spec.targets)
    layer = model.get_submodule(spec.cam_layer)

    def ours(method: str = "gradcam"):
        cams, logits = compute_cams_with_logits(model, spec, x, method)
        return torch.sigmoid(torch.from_numpy(logits)), cams_to_image(cams, (SIZE, SIZE))

    def reference():
        with GradCAM(model=model, target_layers=[layer]) as cam:
            maps = [cam(input_tensor=x, targets=[ClassifierOutputTarget(c)])[0] for c in range(k)]
            probabilities = torch.sigmoid(cam.outputs.detach())
        model.zero_grad(set_to_none=True)
        return probabilities, maps

    def forward_only():
        with torch.inference_mode():
            return torch.sigmoid(model(x))

    for fn in (ours, reference, forward_only, lambda: ours("gradcam++")):  # warm-up
        fn()
    t_ours, t_ref = [], []
    for _ in range(repeat):  # alternate, so load from elsewhere hits both sides alike
        t_ours += timed(ours, 1)
        t_ref += timed(reference, 1)
    t_fwd = timed(forward_only, repeat)
    t_pp = timed(lambda: ours("gradcam++"), repeat)
    row = {"arch": arch, "input": SIZE, "classes": k,
           "ours_gradcam_s": statistics.median(t_ours), "ours_gradcam_best_s": min(t_ours),
           "pytorch_grad_cam_s": statistics.median(t_ref), "pytorch_grad_cam_best_s": min(t_ref),
           "forward_only_s": statistics.median(t_fwd), "ours_gradcampp_s": statistics.median(t_pp)}
    row["speedup"] = row["pytorch_grad_cam_s"] / row["ours_gradcam_s"]
    if scorecam:
        t0 = time.perf_counter()
        compute_cams_with_logits(model, spec, x, "scorecam", batch_size=32)
        row["ours_scorecam_s"] = time.perf_counter() - t0
        row["scorecam_masked_forwards"] = layer_channels(model, spec, x)
    return row


def layer_channels(model, spec, x) -> int:
    import torch

    store = {}
    handle = model.get_submodule(spec.cam_layer).register_forward_hook(lambda m, i, o: store.update(c=o.shape[1]))
    try:
        with torch.no_grad():
            model(x)
    finally:
        handle.remove()
    return store["c"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--archs", default="resnet18,resnet50-ta", help="comma-separated architectures")
    parser.add_argument("--scorecam-archs", default="resnet18",
                        help="architectures also timed with Score-CAM at 512 px (one run each)")
    parser.add_argument("--no-scorecam", action="store_true")
    parser.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: torch's default)")
    parser.add_argument("--json", metavar="OUT")
    args = parser.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    score_archs = set() if args.no_scorecam else set(args.scorecam_archs.split(","))
    rows = [bench_arch(a, args.repeat, a in score_archs) for a in args.archs.split(",")]
    machine = f"{machine_description()}, torch {torch.__version__} ({torch.get_num_threads()} threads)"
    print(f"machine: {machine}")
    print(f"One {SIZE}x{SIZE} image, 8 classes, CPU; medians of {args.repeat} runs after a warm-up.\n")
    print("| model | ours: 8 probabilities + 8 Grad-CAMs (s) | pytorch-grad-cam, 8 calls (s) | speed-up | "
          "forward only (s) | ours Grad-CAM++ (s) | ours Score-CAM (s) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        score = (f"{r['ours_scorecam_s']:.1f} ({r['scorecam_masked_forwards']} masked forwards)"
                 if "ours_scorecam_s" in r else "—")
        print(f"| {r['arch']} | {r['ours_gradcam_s']:.3f} | {r['pytorch_grad_cam_s']:.3f} | {r['speedup']:.1f}x | "
              f"{r['forward_only_s']:.3f} | {r['ours_gradcampp_s']:.3f} | {score} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine, "floor_speedup": FLOOR, "rows": rows}, indent=2))
    return 0 if all(r["speedup"] >= FLOOR for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
