"""The non-GUI commands of `cxrviewer`: info, render, dicomize. Each returns an exit status."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from cxrviewer.errors import CxrError


def _error(err: CxrError | str) -> None:
    print(f"cxrviewer: {err}", file=sys.stderr)


def image_facts(path: str) -> dict[str, Any]:
    """What `cxrviewer info` reports for one file (decodes it, so corrupt pixel data is caught)."""
    from cxrviewer.io import load_image

    image = load_image(path)
    meta = image.meta
    return {
        "file": str(path),
        "patient_id": meta.patient_id,
        "patient_name": meta.patient_name,
        "study_uid": meta.study_uid,
        "study_date": meta.study_date,
        "series_uid": meta.series_uid,
        "sop_instance_uid": meta.sop_instance_uid,
        "sop_class_uid": meta.sop_class_uid,
        "modality": meta.modality,
        "view_position": meta.view_position,
        "laterality": meta.laterality,
        "rows": image.shape[0],
        "columns": image.shape[1],
        "frames": image.number_of_frames,
        "bits_stored": image.bits_stored,
        "signed": image.signed,
        "photometric": image.photometric,
        "format": image.source_format,
        "transfer_syntax": image.transfer_syntax,
        "transfer_syntax_name": image.transfer_syntax_name,
        "pixel_spacing_mm": list(image.pixel_spacing) if image.pixel_spacing else None,
        "spacing_source": image.spacing_source or None,
        "windows": [{"center": w.center, "width": w.width, "function": w.function, "explanation": w.explanation}
                    for w in image.windows],
        "voi_luts": [{"first_mapped": v.first_mapped, "entries": int(v.data.size), "bits": v.bits,
                      "explanation": v.explanation} for v in image.voi_luts],
        "value_range": [float(image.pixels.min()), float(image.pixels.max())],
        "labels": list(meta.labels),
        "warnings": list(image.warnings),
    }


def _print_facts(facts: dict[str, Any]) -> None:
    print(facts["file"])
    width = max(len(k) for k in facts)
    for key, value in facts.items():
        if key == "file" or value in ("", None, [], ()):
            continue
        print(f"  {key:<{width}}  {value}")


def run_info(args: argparse.Namespace) -> int:
    results, failed = [], 0
    for path in args.files:
        try:
            facts = image_facts(path)
        except CxrError as err:
            failed += 1
            _error(err)
            results.append({"file": str(path), "error": str(err)})
            continue
        results.append(facts)
        if not args.json:
            _print_facts(facts)
    if args.json:
        json.dump(results if len(args.files) > 1 else results[0], sys.stdout, indent=2)
        print()
    return 1 if failed else 0


def run_render(args: argparse.Namespace) -> int:
    import cv2

    from cxrviewer.imaging.voi import to_display
    from cxrviewer.io import VoiWindow, load_image

    try:
        image = load_image(args.file)
    except CxrError as err:
        _error(err)
        return 1
    if args.window and args.window[1] < 1:
        _error(f"{Path(args.file).name}: the window width must be at least 1, not {args.window[1]:g}.")
        return 2
    voi = VoiWindow(args.window[0], args.window[1]) if args.window else None
    # --invert: the opposite of what the photometric interpretation asks; --no-invert: never.
    invert = None if args.invert is None else (not image.inverted if args.invert else False)
    pixels = to_display(image, voi, invert=invert)
    if args.size:
        if args.size < 1:
            _error(f"{Path(args.out).name}: --size must be a positive number of pixels.")
            return 2
        scale = args.size / max(pixels.shape)
        new = (max(1, round(pixels.shape[1] * scale)), max(1, round(pixels.shape[0] * scale)))
        pixels = cv2.resize(pixels, new, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    out = Path(args.out)
    try:
        ok = cv2.imwrite(str(out), pixels)
    except cv2.error:
        ok = False
    if not ok:
        _error(f"{out.name}: cannot write the PNG there (check the folder exists and the name ends in .png).")
        return 1
    return 0


def run_dicomize(args: argparse.Namespace) -> int:
    from cxrviewer.io.dicomize import dicomize

    try:
        report = dicomize(args.images, args.out, args.labels, modality=args.modality)
    except CxrError as err:
        _error(err)
        return 1
    for png, reason in report.skipped:
        _error(reason if reason.startswith(png.name) else f"{png.name}: {reason}")
    print(f"wrote {len(report.written)} DICOM file(s) to {args.out}; skipped {len(report.skipped)}")
    return 0 if report.written else 1
