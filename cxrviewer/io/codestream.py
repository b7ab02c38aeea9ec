"""Image sizes declared in stream headers (JPEG 2000 SIZ, JPEG/JPEG-LS SOF, PNG IHDR), read without
decoding: the catalog sizes images this way, and `load_dicom` refuses a compressed frame that claims
another size than its DICOM header before a decoder allocates for it."""

from __future__ import annotations

import io
import struct
from typing import BinaryIO

import pydicom
from pydicom.dataset import Dataset

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# JPEG start-of-frame markers: C0–CF except DHT (C4), JPG (C8) and DAC (CC); F7 is JPEG-LS SOF55.
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF, 0xF7}


def png_size(head: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG's first 24 bytes (signature + IHDR), or None if they are not that."""
    if len(head) < 24 or not head.startswith(PNG_MAGIC) or head[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", head[16:24])
    return int(width), int(height)


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


def jpeg_frame_header(f: BinaryIO) -> tuple[int, int, int]:
    """(width, height, components) from the first SOF marker of a JPEG/JPEG-LS stream, reading
    from just after the SOI marker and seeking past every other segment (nothing is decoded).

    Raises ValueError with a short reason when the stream ends or breaks before a frame header.
    """
    while True:
        marker = f.read(2)
        while len(marker) == 2 and marker[0] == 0xFF and marker[1] == 0xFF:  # fill bytes
            marker = marker[1:] + f.read(1)
        if len(marker) < 2 or marker[0] != 0xFF:
            raise ValueError("the JPEG header is malformed (no frame header)")
        code = marker[1]
        if code in (0xD8, 0x01) or 0xD0 <= code <= 0xD7:  # markers without a length
            continue
        segment = f.read(2)
        if len(segment) < 2:
            raise ValueError("the JPEG header is truncated")
        length = struct.unpack(">H", segment)[0]
        if code in _SOF:
            frame = f.read(6)
            if len(frame) < 6:
                raise ValueError("the JPEG frame header is truncated")
            _, height, width, components = struct.unpack(">BHHB", frame)
            return width, height, components
        if code in (0xD9, 0xDA) or length < 2:  # end of image / start of scan before any frame
            raise ValueError("the JPEG header is malformed (no frame header)")
        f.seek(length - 2, 1)


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the first SOF marker of a JPEG or JPEG-LS stream held in memory."""
    if not data.startswith(b"\xff\xd8"):
        return None
    stream = io.BytesIO(data)
    stream.seek(2)
    try:
        width, height, _ = jpeg_frame_header(stream)
    except ValueError:
        return None
    return width, height


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
