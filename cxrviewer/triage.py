"""Batch triage: score a folder or a list of images, most suspicious first (Qt-free).

    rows = triage("/data/today", Analyzer("default"), progress=bar, cancel=stop.is_set)
    write_csv(rows, "worklist.csv")

Inference only (no CAMs, no boxes): images go through the model's one preprocessing path
(`spec.preprocess`) and one forward pass per batch, so a folder is scored far faster than with
`Analyzer.analyze` per image. The next batch is decoded in a helper thread while the model runs.
A file that cannot be read becomes a row with its one-sentence error; it never stops the run.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cxrviewer.errors import CorruptImage, CxrError, first_line

Progress = Callable[[int, int], None]
Cancel = Callable[[], bool]


class WorklistError(CxrError):
    """The worklist file cannot be written."""


CSV_FIXED = ("path", "patient_id", "study_date", "top_finding", "top_probability", "positive_findings", "error")


@dataclass
class TriageRow:
    """One image of the worklist: its scores, or the sentence saying why it has none."""

    path: Path
    patient_id: str = ""
    study_date: str = ""  # as the file says it (DICOM: YYYYMMDD), "" when unknown
    top_finding: str = ""
    top_probability: float | None = None
    probabilities: dict[str, float] = field(default_factory=dict)  # in the model's target order
    positives: tuple[str, ...] = ()  # findings at or above their threshold, most probable first
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class _Loaded:
    path: Path
    tensor: Any = None  # torch.Tensor [C, H, W]
    patient_id: str = ""
    study_date: str = ""
    error: str | None = None
    metadata: Any = None  # torch.Tensor [1, D]: the model's age / sex / view inputs from the tags (spec.inputs)


def image_paths(source: str | Path | Iterable[str | Path]) -> tuple[list[Path], list[TriageRow]]:
    """(images to score, error rows) for a folder (through its catalog), a file, or a list of files."""
    if isinstance(source, (str, Path)) and Path(source).is_dir():
        from cxrviewer.io.catalog import Catalog

        with Catalog.open(source) as catalog:
            images = [img.path for img in catalog.images()]
            errors = [TriageRow(Path(p), error=sentence) for p, sentence in catalog.errors]
        return images, errors
    if isinstance(source, (str, Path)):
        return [Path(source)], []
    return [Path(p) for p in source], []


def triage(paths: str | Path | Iterable[str | Path], analyzer: Any, *, progress: Progress | None = None,
           cancel: Cancel | None = None, batch_size: int = 16,
           thresholds: Mapping[str, float] | None = None) -> list[TriageRow]:
    """Score every image with `analyzer`'s model; rows sorted by top probability, errors last.

    `paths`: a folder (its catalogued images; files the catalog could not read become error
    rows), one file, or a list of files. `analyzer`: a `cxrviewer.analysis.Analyzer` (its model,
    spec, device and AMP setting are used). `progress(done, total)` is called in this thread after
    each batch; `cancel()` is polled before each batch and returning True stops early (the rows
    made so far are returned, sorted). `thresholds` override the model's per-finding thresholds
    (e.g. the user's settings) for `positives`.
    """
    files, rows = image_paths(paths)
    total = len(files) + len(rows)
    done = len(rows)
    spec = analyzer.spec
    cutoffs = [float((thresholds or {}).get(name, t)) for name, t in zip(spec.targets, spec.thresholds)]
    batches = [files[i:i + max(1, int(batch_size))] for i in range(0, len(files), max(1, int(batch_size)))]
    if progress is not None:
        progress(done, total)
    loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="triage-load")
    try:
        pending = loader.submit(_load_batch, batches[0], spec) if batches else None
        for i in range(len(batches)):
            if cancel is not None and cancel():
                break
            loaded = pending.result()
            pending = loader.submit(_load_batch, batches[i + 1], spec) if i + 1 < len(batches) else None
            rows.extend(_score(loaded, analyzer, cutoffs))
            done += len(loaded)
            if progress is not None:
                progress(done, total)
    finally:  # a cancelled run does not wait for the batch being decoded
        loader.shutdown(wait=False, cancel_futures=True)
    return sort_rows(rows)


def sort_rows(rows: Iterable[TriageRow]) -> list[TriageRow]:
    """Highest top probability first, ties by path; error rows last, by path."""
    return sorted(rows, key=lambda r: (not r.ok, -(r.top_probability or 0.0), str(r.path)))


def _load_batch(paths: Sequence[Path], spec: Any) -> list[_Loaded]:
    """Decode and preprocess (in the loader thread); a bad file becomes its error sentence."""
    from cxrviewer.io import load_image
    from cxrviewer.models.metadata import inputs_of_image

    out = []
    for path in paths:
        try:
            image = load_image(path)
            tensor = spec.preprocess(image)[0]
        except CxrError as exc:
            out.append(_Loaded(path, error=exc.sentence))
            continue
        except MemoryError:
            out.append(_Loaded(path, error=CxrError(path, "the image is too large to score").sentence))
            continue
        except Exception as exc:  # noqa: BLE001 - a decoder's own failure on a damaged file
            out.append(_Loaded(path, error=CorruptImage(path, f"the image cannot be decoded ({first_line(exc)})")
                               .sentence))
            continue
        out.append(_Loaded(path, tensor, image.meta.patient_id, image.meta.study_date,
                           metadata=inputs_of_image(spec, image)))
    return out


def _score(loaded: list[_Loaded], analyzer: Any, cutoffs: list[float]) -> list[TriageRow]:
    """One forward pass over the batch's good images; rows in the batch's order."""
    import torch

    from cxrviewer.explain.layer_pass import autocast_context

    good = [item for item in loaded if item.error is None]
    probabilities: list[list[float]] = []
    if good:
        device = torch.device(analyzer.device)
        batch = torch.stack([item.tensor for item in good]).to(device)
        with torch.inference_mode(), autocast_context(device, bool(getattr(analyzer, "amp", False))):
            metadata = None
            if analyzer.spec.inputs:  # as `analyze` feeds them: from each file's own DICOM tags
                metadata = torch.cat([item.metadata for item in good]).to(device)
            logits = analyzer.model(batch, metadata) if metadata is not None else analyzer.model(batch)
        probabilities = torch.sigmoid(logits.float()).cpu().tolist()
    scores = iter(probabilities)
    targets = list(analyzer.spec.targets)
    rows = []
    for item in loaded:
        if item.error is not None:
            rows.append(TriageRow(item.path, error=item.error))
            continue
        probs = dict(zip(targets, (float(p) for p in next(scores))))
        top = max(targets, key=lambda name: probs[name])
        positives = sorted((n for n, c in zip(targets, cutoffs) if probs[n] >= c), key=lambda n: -probs[n])
        rows.append(TriageRow(item.path, item.patient_id, item.study_date, top, probs[top], probs, tuple(positives)))
    return rows


def write_csv(rows: Sequence[TriageRow], path: str | Path, targets: Sequence[str] | None = None) -> Path:
    """The worklist as CSV: fixed columns, then one probability column per finding (`p_<finding>`).

    Probabilities are written with 6 decimals; positive findings `|`-separated; error rows have
    empty scores and their sentence. `targets`: finding columns (default: those of the first scored row).
    """
    path = Path(path)
    if targets is None:
        targets = next((list(r.probabilities) for r in rows if r.ok), [])
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow([*CSV_FIXED, *(f"p_{t}" for t in targets)])
            for r in rows:
                writer.writerow([str(r.path), r.patient_id, r.study_date, r.top_finding, _num(r.top_probability),
                                 "|".join(r.positives), r.error or "",
                                 *(_num(r.probabilities.get(t)) for t in targets)])
    except OSError as exc:
        raise WorklistError(path, f"the worklist cannot be written ({exc.strerror or exc})") from exc
    return path


def _num(value: float | None) -> str:
    return "" if value is None or not math.isfinite(value) else f"{value:.6f}"
