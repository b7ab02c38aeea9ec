"""Fuzz `load_image` with thousands of mutated and truncated copies of real files.

Every mutant must either load or raise a `CxrError`, within 5 s. The mutations are seeded, so a
failure names the seed, the source file and the mutation, and reproduces exactly. Set
CXRVIEWER_FUZZ_N for a longer run (default 3000).
"""

from __future__ import annotations

import faulthandler
import os
import random
import time
from pathlib import Path

import pytest

from cxrviewer.errors import CxrError
from cxrviewer.io import load_image
from tests.conftest import NIH_SAMPLE, REPO
from tests.corpus import corpus_dirs

SEEDS = ["CT_small.dcm", "MR_small_RLE.dcm", "MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm",
         "JPGLosslessP14SV1_1s_1f_8b.dcm", "SC_rgb_jpeg_dcmtk.dcm", "emri_small.dcm", "MR_small_bigendian.dcm",
         "vlut_04.dcm", "mlut_18.dcm", "examples_palette.dcm", "693_J2KR.dcm", "SC_rgb_rle_2frame.dcm"]
N = int(os.environ.get("CXRVIEWER_FUZZ_N", "3000"))


def _seed_files() -> list[Path]:
    found = {}
    for d in corpus_dirs():
        for name in SEEDS:
            if (d / name).is_file():
                found[name] = d / name
    samples = sorted((REPO / "resources" / "samples").rglob("*.dcm"))[:1]
    pngs = sorted((NIH_SAMPLE / "images").glob("*.png"))[:1] if NIH_SAMPLE.is_dir() else []
    return list(found.values()) + samples + pngs


def mutate(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    """One of: truncate, flip bytes (anywhere or in the header), splice, set a 16-bit word."""
    kind = rng.choice(["truncate", "flip", "flip_header", "splice", "word", "zero_run"])
    buf = bytearray(data)
    n = len(buf)
    if kind == "truncate":
        cut = rng.randrange(0, n)
        return bytes(buf[:cut]), f"truncate@{cut}"
    if kind in ("flip", "flip_header"):
        span = min(n, 2048) if kind == "flip_header" else n
        positions = [rng.randrange(0, span) for _ in range(rng.randint(1, 16))]
        for p in positions:
            buf[p] = rng.randrange(256)
        return bytes(buf), f"{kind}{positions[:4]}"
    if kind == "splice":
        a, b = sorted(rng.randrange(0, n) for _ in range(2))
        at = rng.randrange(0, n)
        return bytes(buf[:at] + buf[a:b] + buf[at:]), f"splice[{a}:{b}]@{at}"
    if kind == "word":
        p = rng.randrange(0, min(n, 4096) - 2)
        value = rng.choice([0, 1, 0xFFFF, 0x7FFF, 0x8000, rng.randrange(65536)])
        buf[p:p + 2] = value.to_bytes(2, "little")
        return bytes(buf), f"word@{p}={value}"
    p = rng.randrange(0, n)
    length = rng.randint(1, 4096)
    buf[p:p + length] = bytes(min(length, n - p))
    return bytes(buf), f"zero_run@{p}+{length}"


@pytest.mark.slow
def test_mutants_load_or_raise_typed_errors_quickly(tmp_path):
    seeds = _seed_files()
    if len(seeds) < 5:
        pytest.skip("the DICOM test corpus (pydicom-data) is not installed")
    originals = {p: p.read_bytes() for p in seeds}
    rng = random.Random(20261123)
    slowest = (0.0, "")
    outcomes = {"loaded": 0, "typed error": 0}
    faulthandler.dump_traceback_later(600, exit=True)  # a true hang must not stall CI
    try:
        for i in range(N):
            source = seeds[i % len(seeds)]
            data, how = mutate(originals[source], rng)
            path = tmp_path / f"mutant{source.suffix}"
            path.write_bytes(data)
            start = time.perf_counter()
            try:
                image = load_image(path)
                assert image.pixels.ndim == 2 and image.pixels.size > 0
                outcomes["loaded"] += 1
            except CxrError as err:
                assert str(err).startswith(path.name + ": "), f"{source.name} {how}: {err}"
                outcomes["typed error"] += 1
            except Exception as exc:  # noqa: BLE001 - this is what the test hunts for
                pytest.fail(f"mutant {i} of {source.name} ({how}) raised {type(exc).__name__}: {exc}")
            elapsed = time.perf_counter() - start
            slowest = max(slowest, (elapsed, f"{source.name} {how}"))
            assert elapsed < 5.0, f"mutant {i} of {source.name} ({how}) took {elapsed:.1f} s"
    finally:
        faulthandler.cancel_dump_traceback_later()
    print(f"\n{N} mutants: {outcomes}; slowest {slowest[0]:.2f} s ({slowest[1]})")
    assert outcomes["loaded"] > 0 and outcomes["typed error"] > 0
