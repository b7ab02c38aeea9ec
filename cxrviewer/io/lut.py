"""DICOM lookup tables (Modality LUT and VOI LUT items): descriptor parsing and application."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset


@dataclass(frozen=True)
class Lut:
    first_mapped: int
    bits: int
    data: np.ndarray  # output values, one per input value from first_mapped on


def lut_values(item: Dataset, *, signed_input: bool) -> Lut:
    """Decode a LUT item's descriptor and data (PS3.3 C.11.1.1.1 / C.11.2.1.1).

    Descriptor = (entries, first mapped input value, bits per entry); 0 entries means 65536.
    The first mapped value is signed when the pixels are (the descriptor's VR is then SS, but
    files often say US: reinterpret). LUT Data entries are 16-bit words whatever `bits` says.
    """
    descriptor = [int(v) for v in item.LUTDescriptor]
    if len(descriptor) != 3:
        raise ValueError("the LUT Descriptor must have three values")
    entries, first, bits = descriptor
    entries = entries or 65536
    if signed_input and first >= 32768:
        first -= 65536
    raw = item.LUTData
    if isinstance(raw, (bytes, bytearray)):
        data = np.frombuffer(raw, dtype="<u2")
    else:
        data = np.asarray(raw if isinstance(raw, (list, tuple)) or hasattr(raw, "__len__") else [raw])
    data = data.astype(np.int64)
    if data.size < entries:
        raise ValueError(f"the LUT has {data.size} entries, its descriptor says {entries}")
    data = data[:entries]
    if bits <= 0 or bits > 16:
        bits = max(int(data.max()).bit_length(), 1)
    return Lut(first_mapped=first, bits=bits, data=data)


def apply_lut(values: np.ndarray, first_mapped: int, data: np.ndarray) -> np.ndarray:
    """Map each value through LUT `data`, clamping below the first and above the last entry."""
    index = np.rint(values.astype(np.float64) - first_mapped).astype(np.int64)
    np.clip(index, 0, data.size - 1, out=index)
    return data[index]
