"""Image size declared inside a compressed frame (JPEG 2000 SIZ, JPEG/JPEG-LS SOF), read before
decoding, so a corrupt stream that claims a huge image is refused instead of decoded."""

from __future__ import annotations

import struct

import pydicom
from pydicom.dataset import Dataset

# JPEG start-of-frame markers: C0–CF except DHT (C4), JPG (C8) and DAC (CC); F7 is JPEG-LS SOF55.
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF, 0xF7}


def first_fragment(ds: Dataset) -> bytes | None:
    """The first fragment of encapsulated Pixel Data (the start of frame 0), or None.

    The first item of encapsulated data is always the Basic Offset Table (possibly empty); the
    frame data starts with the second.
    """
    try:
        fragments = pydicom.encaps.generate_fragments(ds.PixelData)
        next(fragments)  # the Basic Offset Table
        return bytes(next(fragments)[:65536])
    except Exception:  # noqa: BLE001 - malformed encapsulation is reported by the decoder later
        return None


def j2k_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the SIZ marker segment of a J2K codestream (raw or inside JP2 boxes)."""
    at = data.find(b"\xff\x4f\xff\x51")
    if at < 0 or len(data) < at + 4 + 2 + 2 + 16:
        return None
    xsiz, ysiz, xosiz, yosiz = struct.unpack(">IIII", data[at + 8:at + 24])
    return max(xsiz - xosiz, 0), max(ysiz - yosiz, 0)


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the first SOF marker of a JPEG or JPEG-LS stream."""
    if not data.startswith(b"\xff\xd8"):
        return None
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        length = struct.unpack(">H", data[i + 2:i + 4])[0]
        if marker in _SOF and i + 9 <= len(data):
            height, width = struct.unpack(">HH", data[i + 5:i + 9])
            return width, height
        if marker in (0xD9, 0xDA):  # end of image / start of scan before any SOF
            return None
        i += 2 + length
    return None


def declared_size(ds: Dataset, transfer_syntax: pydicom.uid.UID) -> tuple[int, int] | None:
    """The frame size a compressed stream declares, for the JPEG family and JPEG 2000; else None."""
    if not transfer_syntax.is_encapsulated or "PixelData" not in ds:
        return None
    data = first_fragment(ds)
    if not data:
        return None
    if data.startswith(b"\xff\xd8"):
        return jpeg_size(data)
    return j2k_size(data)
