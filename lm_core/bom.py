"""Byte-order marks: the one clue to a text's encoding that outranks every declaration."""

from __future__ import annotations

import codecs

BOMS = (  # longest first: the UTF-32 LE mark starts with the UTF-16 LE one
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)


def sniff_bom(data: bytes) -> tuple[bytes, str] | None:
    """(the mark, the codec it announces) if `data` starts with a byte-order mark."""
    return next(((bom, name) for bom, name in BOMS if data.startswith(bom)), None)
