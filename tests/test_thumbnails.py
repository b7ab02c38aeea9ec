"""Thumbnail cache: the display path shrunk with INTER_AREA, keyed by path + size + mtime, pooled."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from cxrviewer.imaging.voi import to_display
from cxrviewer.io import load_image, thumbnails
from cxrviewer.io.thumbnails import (
    ThumbnailCache,
    generate_many,
    thumbnail,
    thumbnails_dir,
)
from tests.conftest import REPO, dicom_testfile
from tests.corpus import corpus_files

SAMPLES = sorted((REPO / "resources" / "samples").rglob("*.dcm"))


@pytest.fixture
def cache(tmp_path) -> ThumbnailCache:
    return ThumbnailCache(tmp_path / "thumbs")


def entries(cache: ThumbnailCache) -> list[Path]:
    return sorted(cache.folder.glob("*/*.png"))


def test_monochrome1_thumbnail_is_the_inverted_display_picture_shrunk_with_inter_area(cache):
    path = dicom_testfile("RG1_UNCR.dcm")  # MONOCHROME1, 1955 x 1841, a window in the file
    image = load_image(path)
    assert image.photometric == "MONOCHROME1"
    picture = cache.thumbnail(path)
    assert picture.dtype == np.uint8 and picture.shape == (128, 121)  # 1841 * 128 / 1955 = 120.5
    expected = cv2.resize(to_display(image), (121, 128), interpolation=cv2.INTER_AREA)
    assert np.array_equal(picture, expected)
    upright = cv2.resize(to_display(image, invert=False), (121, 128), interpolation=cv2.INTER_AREA)
    assert np.abs(picture.astype(int) - (255 - upright.astype(int))).max() <= 1
    assert picture.mean() > 100 and not np.array_equal(picture, upright)


def test_default_location_and_module_functions(monkeypatch, tmp_path):
    monkeypatch.setenv("CXRVIEWER_CACHE_DIR", str(tmp_path / "c"))
    assert thumbnails_dir() == tmp_path / "c" / "thumbnails"
    picture = thumbnail(SAMPLES[0])
    assert picture.shape == (128, 128)  # the samples are 512 x 512
    assert len(list((tmp_path / "c" / "thumbnails").glob("*/*.png"))) == 1
    small = thumbnail(SAMPLES[0], max_side=64)
    assert small.shape == (64, 64)
    results = dict(generate_many(SAMPLES[:2], workers=1, max_side=64))
    assert np.array_equal(results[SAMPLES[0]], small)


def test_second_call_reads_the_cache(cache, monkeypatch):
    first = cache.thumbnail(SAMPLES[0])
    assert len(entries(cache)) == 1 and cache.cached(SAMPLES[0]) is not None

    def fail(*args, **kwargs):
        raise AssertionError("regenerated although cached")

    monkeypatch.setattr(thumbnails, "render_thumbnail", fail)
    assert np.array_equal(cache.thumbnail(SAMPLES[0]), first)
    assert np.array_equal(dict(cache.generate_many([SAMPLES[0]], workers=2))[SAMPLES[0]], first)


def test_a_changed_file_gets_a_new_thumbnail_and_the_stale_one_goes(cache, tmp_path):
    path = tmp_path / "x.dcm"
    shutil.copyfile(SAMPLES[0], path)
    old = cache.thumbnail(path)
    old_entry = entries(cache)
    shutil.copyfile(SAMPLES[1], path)
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    assert cache.cached(path) is None
    new = cache.thumbnail(path)
    assert not np.array_equal(old, new)
    assert np.array_equal(new, ThumbnailCache(tmp_path / "other").thumbnail(SAMPLES[1]))
    assert len(entries(cache)) == 1 and entries(cache) != old_entry
    # another size of the same file is another entry, not a stale one
    ThumbnailCache(cache.folder, max_side=32).thumbnail(path)
    assert len(entries(cache)) == 2


def test_a_damaged_cache_entry_is_regenerated(cache):
    good = cache.thumbnail(SAMPLES[0])
    entries(cache)[0].write_bytes(b"\x89PNG garbage")
    assert cache.cached(SAMPLES[0]) is None
    assert np.array_equal(cache.thumbnail(SAMPLES[0]), good)


def test_small_images_are_not_enlarged(cache, tmp_path):
    path = tmp_path / "small.png"
    picture = (np.arange(30 * 50) % 256).astype(np.uint8).reshape(30, 50)
    cv2.imwrite(str(path), picture)  # spans 0..255: the display path's full-range VOI keeps it as is
    assert np.array_equal(cache.thumbnail(path), picture)
    assert ThumbnailCache(cache.folder, max_side=25).thumbnail(path).shape == (15, 25)
    with pytest.raises(ValueError):
        ThumbnailCache(cache.folder, max_side=0)


def test_bad_files_raise_one_sentence(cache, tmp_path):
    from cxrviewer.errors import CxrError, MissingFile, NotAnImage

    with pytest.raises(MissingFile, match=r"^nothere\.dcm: the file does not exist\.$"):
        cache.thumbnail(tmp_path / "nothere.dcm")
    with pytest.raises(MissingFile, match="folder"):
        cache.thumbnail(tmp_path)
    with pytest.raises(NotAnImage) as err:
        cache.thumbnail(dicom_testfile("rtplan.dcm"))
    assert str(err.value).startswith("rtplan.dcm: ") and str(err.value).count(".") >= 1
    truncated = tmp_path / "cut.dcm"
    truncated.write_bytes(SAMPLES[0].read_bytes()[:-5000])
    with pytest.raises(CxrError, match=r"^cut\.dcm: "):
        cache.thumbnail(truncated)
    assert entries(cache) == []


def _bad_inputs(tmp_path: Path) -> list[Path]:
    truncated = tmp_path / "cut.dcm"
    truncated.write_bytes(SAMPLES[0].read_bytes()[:-5000])
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    return [truncated, text, tmp_path / "missing.dcm", tmp_path]


def test_generate_many_yields_every_path_once_and_never_raises(cache, tmp_path):
    """The pydicom + pydicom-data corpus (files under 1 MB: ~140 of 153, for time), the samples and
    broken inputs, in a fork pool."""
    corpus = [p for p in corpus_files() if p.stat().st_size < 1_000_000]
    paths = [*SAMPLES, *corpus, *_bad_inputs(tmp_path)]
    seen: list[Path] = []
    for path, result in cache.generate_many(paths, workers=2):
        seen.append(path)
        if isinstance(result, str):
            assert result.startswith(f"{path.name}: ") and result.endswith(".") and "\n" not in result
        else:
            assert result.dtype == np.uint8 and result.ndim == 2 and 0 < max(result.shape) <= 128
    assert sorted(map(str, seen)) == sorted(map(str, paths))
    results = dict(cache.generate_many(paths, workers=1))  # all answered from the cache now
    assert all(isinstance(results[p], np.ndarray) for p in SAMPLES)
    assert sum(isinstance(r, str) for r in results.values()) >= 4 + 5  # the broken ones, RT/SR objects


@pytest.mark.parametrize("start_method", ["fork", "spawn", None])
def test_pooled_results_equal_the_sequential_ones(tmp_path, start_method):
    paths = [*SAMPLES, *_bad_inputs(tmp_path)]
    sequential = dict(ThumbnailCache(tmp_path / "a").generate_many(paths, workers=1))
    pooled = dict(ThumbnailCache(tmp_path / "b").generate_many(paths, workers=2, start_method=start_method))
    assert sequential.keys() == pooled.keys()
    for path, result in sequential.items():
        if isinstance(result, str):
            assert pooled[path] == result
        else:
            assert np.array_equal(pooled[path], result)


def test_a_worker_that_dies_is_reported_not_retried_here(cache, tmp_path, monkeypatch):
    killer = tmp_path / "killer.dcm"
    shutil.copyfile(SAMPLES[0], killer)
    real = thumbnails.render_thumbnail

    def render(path, max_side):  # the forked workers inherit this patch
        if Path(path).name == "killer.dcm":
            os._exit(1)  # as a worker killed for memory would
        return real(path, max_side)

    monkeypatch.setattr(thumbnails, "render_thumbnail", render)
    paths = [killer, *SAMPLES]
    results = dict(cache.generate_many(paths, workers=2, start_method="fork"))
    assert sorted(results) == sorted(paths)
    assert results[killer] == ("killer.dcm: the thumbnail process stopped while making this thumbnail "
                               "(the image may be too large or damaged).")
    assert all(isinstance(r, np.ndarray) or "process stopped" in r for r in results.values())


def test_closing_the_generator_early_stops_cleanly(cache):
    gen = cache.generate_many(SAMPLES, workers=2)
    _, result = next(gen)
    assert isinstance(result, np.ndarray)
    gen.close()
    assert len(entries(cache)) <= len(SAMPLES)


def test_import_is_light():
    code = ("import sys, cxrviewer.io.thumbnails; "
            "print(sorted(m for m in ('torch', 'PySide6', 'pyqtgraph') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert out.stdout.strip() == "[]", out.stderr
