"""Full analysis of one 512x512 image: 8 probabilities + 8 Grad-CAMs + 8 SCALP boxes.

    .venv/bin/python benchmarks/bench_analysis.py [--repeat 3] [--archs resnet18,efficientnet-lite0] [--json OUT]

Each model runs at its architecture's input size (EfficientNet-Lite: 256 px, a 16×16 CAM grid at
output stride 16), or at 512 px where the architecture names none (ResNets: a 16×16 grid too).

Side by side in the same run: `cxrviewer.analysis.Analyzer.analyze` (preprocessing, one forward
with the all-classes CAM pass, boxes mapped to image pixels) against pytorch-grad-cam producing the
same 8 maps (one call per class, `ClassifierOutputTarget`), plus a forward for the probabilities and
the same box step on its maps. Random-initialised models (timing does not depend on the weights).
Device: CUDA when present (then both run there), else CPU.
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

REPO = Path(__file__).resolve().parents[1]


def sample_image():
    from cxrviewer.io import load_image

    nih = REPO.parent / "shared" / "data" / "nih-sample" / "images" / "00000001_000.png"
    if nih.is_file():
        return load_image(nih)
    return load_image(sorted((REPO / "resources" / "samples").rglob("*.dcm"))[0])


def time_ours(analyzer, image, repeat: int) -> list[float]:
    analyzer.analyze(image)  # warm-up
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        analyzer.analyze(image)
        times.append(time.perf_counter() - t0)
    return times


def time_reference(analyzer, image, repeat: int) -> list[float]:
    import torch
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from cxrviewer.explain import boxes_from_heatmap

    model, spec = analyzer.model, analyzer.spec
    layer = model.get_submodule(spec.cam_layer)

    def run() -> None:
        x, geometry = spec.preprocess_with_geometry(image)
        x = x.to(analyzer.device)
        with torch.no_grad():
            torch.sigmoid(model(x))
        with GradCAM(model=model, target_layers=[layer]) as cam:
            for k in range(len(spec.targets)):
                heat = cam(input_tensor=x, targets=[ClassifierOutputTarget(k)])[0]
                for box in boxes_from_heatmap(heat, method="scalp"):
                    geometry.box_to_image((box.x0, box.y0, box.x1, box.y1))

    run()  # warm-up
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return times


def cam_grid(model, spec) -> str:
    """The CAM layer's feature-map size at the model's input size, e.g. "16×16"."""
    import torch

    shapes = []
    handle = model.get_submodule(spec.cam_layer).register_forward_hook(lambda m, i, o: shapes.append(o.shape))
    with torch.no_grad():
        model.eval()(torch.zeros(1, spec.in_channels, *spec.input_size))
    handle.remove()
    return "×".join(str(n) for n in shapes[0][-2:])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--archs", default="resnet18,resnet50-ta,efficientnet-lite0,scalp-lite0")
    parser.add_argument("--json", metavar="OUT")
    args = parser.parse_args()
    from cxrviewer.analysis import Analyzer
    from cxrviewer.models import create_model
    from cxrviewer.models.registry import get_architecture

    image = sample_image()
    rows = []
    for arch in args.archs.split(","):
        size = tuple(get_architecture(arch).spec_defaults.get("input_size", (512, 512)))
        model, spec = create_model(arch, input_size=size)
        analyzer = Analyzer(model, spec, device="auto")
        ours = statistics.median(time_ours(analyzer, image, args.repeat))
        ref = statistics.median(time_reference(analyzer, image, args.repeat))
        grid = cam_grid(model, spec)
        rows.append({"arch": arch, "input": f"{size[0]}", "cam_grid": grid, "device": analyzer.device, "ours_s": ours, "pytorch_grad_cam_s": ref,
                     "speedup": ref / ours})
    print(f"machine: {machine_description()}; image {image.path.name} {image.shape[1]}x{image.shape[0]}")
    print("| model | input (px) | CAM grid | device | ours: analyze() (s) | pytorch-grad-cam, same maps + boxes (s) | speed-up |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['arch']} | {r['input']} | {r['cam_grid']} | {r['device']} | {r['ours_s']:.3f} | {r['pytorch_grad_cam_s']:.3f} | {r['speedup']:.1f}× |")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine_description(), "rows": rows}, indent=2))
    return 0 if all(r["speedup"] >= 5 for r in rows if r["device"] == "cpu") else 1


if __name__ == "__main__":
    sys.exit(main())
