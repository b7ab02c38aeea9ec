"""Patient and acquisition facts as optional model inputs: age, sex and view position.

A model whose spec lists `inputs` (a subset of `METADATA_INPUTS`, in that order) takes, beside the
image, a vector of two numbers per input: the encoded value and a 1/0 flag saying whether it is
known. A missing value is encoded as (0, 0): masked, never guessed (no "average age" is filled in).

Where the values come from:
- training: the data source's records (`Record.age`, `.sex`, `.view`; NIH's table has all three);
- `analyze` and the viewer: the DICOM tags PatientAge (AS, e.g. "045Y"), PatientSex and
  ViewPosition, or an NIH table beside a PNG (all read into `ImageMeta` by `load_image`).

Encodings (`encode`): age (years − 50) / 20, known for 0–120 years (NIH's table has a few
impossible ages, e.g. 414: these count as missing); sex M = +1, F = −1 (O or empty: missing);
view AP = +1, PA = −1 (lateral and other views: missing, as a frontal model has no meaning for them).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

METADATA_INPUTS: tuple[str, ...] = ("age", "sex", "view")  # the one list of model-input names, in vector order
VALUES_PER_INPUT = 2  # (encoded value, known flag)
MAX_AGE_YEARS = 120.0
_AGE_UNITS = {"Y": 1.0, "M": 1 / 12, "W": 7 / 365.25, "D": 1 / 365.25}


class BadInputs(ValueError):
    """A model-input list that names unknown inputs or repeats one."""


def check_inputs(inputs: Sequence[str]) -> tuple[str, ...]:
    """`inputs` as a tuple in `METADATA_INPUTS` order; unknown or repeated names are refused."""
    names = tuple(str(n) for n in inputs)
    unknown = [n for n in names if n not in METADATA_INPUTS]
    if unknown or len(set(names)) != len(names):
        raise BadInputs(f"model inputs must be distinct names among {', '.join(METADATA_INPUTS)} "
                        f"(got {', '.join(names) or 'none'})")
    return tuple(n for n in METADATA_INPUTS if n in names)


def vector_size(inputs: Sequence[str]) -> int:
    return VALUES_PER_INPUT * len(inputs)


def parse_age(value: Any) -> float | None:
    """Years from a number or a DICOM Age String ("045Y", "010M", "003W", "005D"); None when absent
    or outside 0–120 years."""
    if value is None or value == "":
        return None
    if isinstance(value, (int, float, np.integer, np.floating)):
        years = float(value)
    else:
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([YMWD]?)\s*", str(value).upper())
        if not match:
            return None
        years = float(match.group(1)) * _AGE_UNITS[match.group(2) or "Y"]
    return years if 0.0 <= years <= MAX_AGE_YEARS and np.isfinite(years) else None


def parse_sex(value: Any) -> float | None:
    text = str(value or "").strip().upper()
    return {"M": 1.0, "MALE": 1.0, "F": -1.0, "FEMALE": -1.0}.get(text)


def parse_view(value: Any) -> float | None:
    text = str(value or "").strip().upper()
    return {"AP": 1.0, "PA": -1.0}.get(text)


_PARSERS = {"age": lambda v: None if (y := parse_age(v)) is None else (y - 50.0) / 20.0,
            "sex": parse_sex, "view": parse_view}


def encode(values: Mapping[str, Any], inputs: Sequence[str]) -> np.ndarray:
    """The model-input vector [2 × len(inputs)] float32 from raw values {"age": ..., "sex": ..., "view": ...}."""
    out = np.zeros(vector_size(inputs), np.float32)
    for i, name in enumerate(inputs):
        encoded = _PARSERS[name](values.get(name))
        if encoded is not None:
            out[VALUES_PER_INPUT * i: VALUES_PER_INPUT * (i + 1)] = (encoded, 1.0)
    return out


def values_of_record(record: Any) -> dict[str, Any]:
    """Raw values of a training record (`trainer.data.sources.Record`)."""
    return {"age": record.age, "sex": record.sex, "view": record.view}


def values_of_image(image: Any) -> dict[str, Any]:
    """Raw values of a loaded image (`ImageData.meta`: DICOM PatientAge, PatientSex, ViewPosition)."""
    meta = getattr(image, "meta", None)
    if meta is None:
        return {}
    return {"age": meta.patient_age, "sex": meta.patient_sex, "view": meta.view_position}


def describe(values: Mapping[str, Any], inputs: Sequence[str]) -> dict[str, str]:
    """What the model was given, for people: {"age": "45 years", "sex": "missing", ...}."""
    vector = encode(values, inputs)
    shown: dict[str, str] = {}
    for i, name in enumerate(inputs):
        known = vector[VALUES_PER_INPUT * i + 1] > 0
        if not known:
            shown[name] = "missing"
        elif name == "age":
            shown[name] = f"{parse_age(values.get(name)):.0f} years"
        else:
            shown[name] = str(values.get(name)).strip().upper()
    return shown


def inputs_of_image(spec: Any, image: Any) -> Any:
    """The model's metadata input for a loaded image, as a tensor [1, size] for `model(x, m)`, or
    None for an image-only model (`spec.inputs` empty)."""
    if not spec.inputs:
        return None
    import torch

    return torch.from_numpy(spec.metadata_vector(values_of_image(image)))[None]
