"""The trainer's preprocessed-image cache: a batch's pictures decoded from the files (first epoch)
against read back from the memory-mapped cache (every later epoch), side by side, one process.

    .venv/bin/python benchmarks/bench_image_cache.py [--images 64] [--size 512] [--data nih:PATH]

Cold: `ImageCache.picture` decodes the PNG/DICOM, applies the display intensity step, resizes and
stores the row. Warm: the same call on the filled row. Medians over the images; ratio = cold / warm.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_description  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=f"nih:{REPO.parent / 'shared' / 'data' / 'nih-sample'}")
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--size", type=int, default=512)
    args = parser.parse_args()
    if args.data.startswith("nih:") and not Path(args.data[4:]).is_dir():
        print(f"skipped: {args.data[4:]} is not present")
        return 0
    from cxrviewer.models.factory import create_model
    from cxrviewer.trainer.data import open_source
    from cxrviewer.trainer.image_cache import ImageCache

    source = open_source(args.data)
    source.records = source.records[:args.images]
    _, spec = create_model("resnet18", input_size=(args.size, args.size))
    with tempfile.TemporaryDirectory() as tmp:
        cache = ImageCache(source, spec, tmp)
        cold, warm = [], []
        for i in range(len(source.records)):
            t0 = time.perf_counter()
            cache.picture(i)
            cold.append(time.perf_counter() - t0)
        for i in range(len(source.records)):
            t0 = time.perf_counter()
            cache.picture(i)
            warm.append(time.perf_counter() - t0)
    c, w = statistics.median(cold), statistics.median(warm)
    print(f"machine: {machine_description()}")
    print(f"{len(cold)} images of {args.data}, input {args.size}x{args.size}")
    print(f"| path | median ms / image |\n|---|---|\n| decode + preprocess (cold) | {1000 * c:.2f} |\n"
          f"| cache read (warm) | {1000 * w:.3f} |\n\nratio cold / warm: {c / w:.0f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
