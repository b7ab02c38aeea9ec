"""Regenerate `resources/samples/`: a few real NIH ChestX-ray14 radiographs as DX DICOM.

    .venv/bin/python scripts/make_samples.py [--data ../shared/data] [--out resources/samples]

The output is deterministic (UIDs hashed from the NIH identifiers, no timestamps), so running
this again gives byte-identical files; tests/test_dicomize.py checks that.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cxrviewer.io.dicomize import DicomizeReport, dicomize  # noqa: E402
from cxrviewer.io.labels import LabelRow, read_labels_table  # noqa: E402

DEFAULT_DATA = REPO.parent / "shared" / "data"
DEFAULT_OUT = REPO / "resources" / "samples"

# Patient 1's three follow-ups, then one image each of other patients chosen so that the eight
# default findings, a "No Finding" image and an AP view all occur.
SAMPLES: tuple[str, ...] = (
    "00000001_000.png",  # Cardiomegaly, PA
    "00000001_001.png",  # Cardiomegaly|Emphysema, PA
    "00000001_002.png",  # Cardiomegaly|Effusion, PA
    "00000002_000.png",  # No Finding, PA
    "00000574_000.png",  # Consolidation|Mass|Nodule|Pneumothorax, PA
    "00001511_000.png",  # Atelectasis|Pneumonia, AP (supine, portable)
    "00007219_000.png",  # Infiltration|Pneumonia, PA
)


def _readme(rows: list[LabelRow]) -> str:
    lines = [
        "# Sample studies",
        "",
        "Real chest radiographs from the NIH ChestX-ray14 dataset (NIH Clinical Center), released for",
        "unrestricted use; cite Wang et al., \"ChestX-ray8: Hospital-scale Chest X-ray Database and",
        "Benchmarks on Weakly-Supervised Classification and Localization of Common Thorax Diseases\",",
        "CVPR 2017. The PNGs are the 512x512 copies in `../shared/data/nih-sample/images/`, converted",
        "by `cxrviewer.io.dicomize` to DX Image Storage - For Presentation (explicit VR little endian,",
        "MONOCHROME2, 8 bits), one folder per patient (`<Patient ID>/<follow-up>/<image>.dcm`).",
        "",
        "| File | Patient | Follow-up | Sex | Age | View | NIH labels |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        labels = ", ".join(r.labels) if r.labels else "No Finding"
        path = f"{r.patient_id}/{r.follow_up}/{Path(r.image_index).stem}.dcm"
        lines.append(f"| `{path}` | {r.patient_id} | {r.follow_up} | {r.sex} | {r.age} | {r.view_position} | {labels} |")
    lines += [
        "",
        "Not original DICOM: NIH published PNGs only. Study dates are synthetic (2000-01-01 plus the",
        "follow-up number in days); UIDs are `2.25.` UIDs hashed from the NIH identifiers;",
        "ImagerPixelSpacing is derived from the NIH table (original spacing x original size / PNG",
        "size, per axis), not calibrated. The labels are in ImageComments, the source file name in",
        "DerivationDescription. NIH's labels were mined from reports by NLP and are imperfect.",
        "",
        "Regenerate (byte-identical) from the repository root with:",
        "",
        "    .venv/bin/python scripts/make_samples.py",
        "",
    ]
    return "\n".join(lines)


def make_samples(data_dir: str | Path = DEFAULT_DATA, out_dir: str | Path = DEFAULT_OUT) -> DicomizeReport:
    """Write the sample DICOM files and their README into `out_dir` (its old samples are removed)."""
    nih = Path(data_dir) / "nih-sample"
    table_path = nih / "Data_Entry_2017_v2020.csv"
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for child in out_dir.iterdir():  # patient folders from an earlier run
        if child.is_dir() and child.name.isdigit():
            shutil.rmtree(child)
    report = dicomize(nih / "images", out_dir, table_path, modality="DX", names=SAMPLES)
    if report.skipped:
        raise SystemExit("; ".join(reason for _, reason in report.skipped))
    table = read_labels_table(table_path)
    (out_dir / "README.md").write_text(_readme([table[name] for name in SAMPLES]), encoding="utf-8")
    return report


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the shared data folder")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where the samples go")
    args = parser.parse_args(argv)
    report = make_samples(args.data, args.out)
    size = sum(p.stat().st_size for p in report.written)
    print(f"wrote {len(report.written)} files ({size / 1e6:.2f} MB) to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
