"""The Patient ▸ Study ▸ Series ▸ Image tree built from index records, and its text filter.

Missing identifiers never drop an image: no Patient ID puts it under `UNKNOWN_PATIENT`; no Study or
Series Instance UID groups it under a synthetic key per folder (NIH tables: per follow-up), which
starts with `SYNTHETIC_PREFIX` so the GUI can show it as such. Duplicate SOP Instance UIDs keep the
first file in path order.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath

from cxrviewer.io.catalog_scan import FileRecord

UNKNOWN_PATIENT = "(unknown patient)"
SYNTHETIC_PREFIX = "(synthetic) "
_DIGITS = re.compile(r"(\d+)")


@dataclass(frozen=True)
class CatalogImage:
    """One image file of the catalog (headers only; pixels are loaded on demand)."""

    path: Path
    sop_instance_uid: str = ""
    rows: int | None = None
    columns: int | None = None
    view_position: str = ""
    laterality: str = ""
    instance_number: int | None = None
    labels: tuple[str, ...] = ()
    photometric: str = ""
    transfer_syntax: str = ""  # UID; "" for PNG/JPEG
    source_format: str = "dicom"  # "dicom" | "png" | "jpeg"


@dataclass
class SeriesNode:
    series_uid: str  # synthetic keys start with SYNTHETIC_PREFIX
    modality: str = ""
    number: int | None = None
    description: str = ""
    images: list[CatalogImage] = field(default_factory=list)


@dataclass
class StudyNode:
    study_uid: str  # synthetic keys start with SYNTHETIC_PREFIX
    date: str = ""
    description: str = ""
    accession: str = ""
    series: list[SeriesNode] = field(default_factory=list)


@dataclass
class PatientNode:
    patient_id: str  # UNKNOWN_PATIENT when the files do not say
    name: str = ""
    sex: str = ""
    birth_date: str = ""
    studies: list[StudyNode] = field(default_factory=list)

    @property
    def unknown(self) -> bool:
        return self.patient_id == UNKNOWN_PATIENT


def is_synthetic(uid: str) -> bool:
    """True for a study/series key the catalog made up (the files carry no UID)."""
    return uid.startswith(SYNTHETIC_PREFIX)


def _folder(rel: str) -> str:
    parent = str(PurePosixPath(rel).parent)
    return "." if parent in ("", ".") else parent


def _study_key(r: FileRecord) -> str:
    if r.study_uid:
        return r.study_uid
    if r.follow_up is not None and r.patient_id:
        return f"{SYNTHETIC_PREFIX}patient {r.patient_id} follow-up #{r.follow_up}"
    return f"{SYNTHETIC_PREFIX}folder {_folder(r.rel)}"


def _series_key(r: FileRecord) -> str:
    return r.series_uid or f"{SYNTHETIC_PREFIX}folder {_folder(r.rel)}"


def _image(folder: Path, r: FileRecord) -> CatalogImage:
    return CatalogImage(
        path=folder / r.rel, sop_instance_uid=r.sop_instance_uid, rows=r.rows, columns=r.columns,
        view_position=r.view_position, laterality=r.laterality, instance_number=r.instance_number,
        labels=tuple(t for t in r.labels.split("|") if t), photometric=r.photometric,
        transfer_syntax=r.transfer_syntax, source_format=r.fmt,
    )


def split_records(folder: Path, records: list[FileRecord]) -> tuple[
        list[FileRecord], list[tuple[Path, str]], list[tuple[Path, str, Path]]]:
    """(kept image records, errors, duplicates); `records` must be sorted by path."""
    kept: list[FileRecord] = []
    errors: list[tuple[Path, str]] = []
    duplicates: list[tuple[Path, str, Path]] = []
    first: dict[str, str] = {}
    for r in records:
        if r.error:
            errors.append((folder / r.rel, r.error))
            continue
        uid = r.sop_instance_uid
        if uid:
            if uid in first:
                duplicates.append((folder / r.rel, uid, folder / first[uid]))
                continue
            first[uid] = r.rel
        kept.append(r)
    return kept, errors, duplicates


def build_tree(folder: Path, records: list[FileRecord]) -> list[PatientNode]:
    """Group image records (errors and duplicates already removed) into sorted patient nodes."""
    patients: dict[str, PatientNode] = {}
    studies: dict[tuple[str, str], StudyNode] = {}
    series: dict[tuple[str, str, str], SeriesNode] = {}
    images: dict[tuple[str, str, str], list[tuple[FileRecord, CatalogImage]]] = {}
    for r in records:
        pid = r.patient_id or UNKNOWN_PATIENT
        p = patients.get(pid)
        if p is None:
            p = patients[pid] = PatientNode(pid)
        p.name, p.sex = p.name or r.patient_name, p.sex or r.patient_sex
        p.birth_date = p.birth_date or r.patient_birth_date
        skey = (pid, _study_key(r))
        st = studies.get(skey)
        if st is None:
            st = studies[skey] = StudyNode(skey[1])
            p.studies.append(st)
        st.date, st.description = st.date or r.study_date, st.description or r.study_description
        st.accession = st.accession or r.accession
        sekey = (*skey, _series_key(r))
        se = series.get(sekey)
        if se is None:
            se = series[sekey] = SeriesNode(sekey[2])
            st.series.append(se)
            images[sekey] = []
        se.modality, se.number = se.modality or r.modality, se.number if se.number is not None else r.series_number
        se.description = se.description or r.series_description or (
            f"folder {_folder(r.rel)}" if is_synthetic(se.series_uid) else "")
        images[sekey].append((r, _image(folder, r)))
    for key, se in series.items():
        pairs = sorted(images[key], key=lambda ri: (ri[0].instance_number is None, ri[0].instance_number or 0, ri[0].rel))
        se.images = [img for _, img in pairs]
    for p in patients.values():
        for st in p.studies:
            st.series.sort(key=lambda s: (s.number is None, s.number or 0, s.series_uid))
        p.studies.sort(key=lambda s: (s.date == "", s.date, s.description, s.study_uid))
    return sorted(patients.values(), key=lambda p: (p.unknown, natural_key(p.patient_id)))


def natural_key(text: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key that orders "2" before "10" (NIH patient ids are plain numbers)."""
    return tuple((0, int(t)) if t.isdigit() else (1, t.casefold()) for t in _DIGITS.split(text) if t)


def filter_tree(patients: list[PatientNode], text: str) -> list[PatientNode]:
    """Patients whose id or name contains `text` (case-insensitive), whole; otherwise only the
    studies whose date contains it, or the images carrying a matching finding label."""
    needle = text.strip().casefold()
    if not needle:
        return list(patients)
    out: list[PatientNode] = []
    for p in patients:
        if needle in p.patient_id.casefold() or needle in p.name.casefold():
            out.append(p)
            continue
        studies: list[StudyNode] = []
        for st in p.studies:
            if needle in st.date.casefold():
                studies.append(st)
                continue
            kept_series = []
            for se in st.series:
                imgs = [i for i in se.images if any(needle in lab.casefold() for lab in i.labels)]
                if imgs:
                    kept_series.append(replace(se, images=imgs))
            if kept_series:
                studies.append(replace(st, series=kept_series))
        if studies:
            out.append(replace(p, studies=studies))
    return out
