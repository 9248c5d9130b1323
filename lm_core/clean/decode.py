"""Bytes to text, whatever the bytes are: this never raises.

The order follows how much each clue can be trusted:

1. a byte-order mark (it cannot be there by accident);
2. the declared encoding (HTTP header or meta tag), if the bytes decode with it strictly;
3. the crawler's detected encoding, on the same terms;
4. UTF-16 without a BOM, sniffed from the pattern of zero bytes (UTF-8 would "succeed" on it,
   since NUL is valid UTF-8, and give text full of NULs);
5. strict UTF-8 (the common case, and cheap to try);
6. charset_normalizer's best guess (windows-1252 on a tie: see `_guess`);
7. UTF-8 with every undecodable byte replaced by U+FFFD, and that fact recorded.

A declaration that decodes strictly but wrongly (UTF-8 bytes declared as Latin-1 give mojibake)
is not caught here: `extract.repair` runs ftfy, which undoes exactly that.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass

import charset_normalizer

from lm_core.bom import sniff_bom

# Longest prefix looked at by the slow guessers; the whole body is then decoded with their answer.
_SNIFF_BYTES = 64 * 1024

# WHATWG Encoding Standard: browsers read these labels as windows-1252, and so do web pages.
_WEB_ALIASES = {"latin_1": "cp1252", "iso8859-1": "cp1252", "ascii": "cp1252"}


@dataclass(frozen=True)
class Decoded:
    text: str
    encoding: str  # the codec that produced `text` (Python's name for it)
    method: str  # which clue decided: empty | bom | declared | detected | sniffed | utf-8 | guessed | fallback
    replaced: bool  # some bytes could not be decoded and became U+FFFD


def codec_name(label: str | None) -> str | None:
    """Python's canonical codec name for an encoding label, or None if it is not one we know."""
    if not label:
        return None
    try:
        name = codecs.lookup(label.strip().strip("\"'").lower()).name
    except (LookupError, ValueError, TypeError):
        return None
    return _WEB_ALIASES.get(name, name)


def _strict(body: bytes, encoding: str | None) -> str | None:
    if encoding is None:
        return None
    try:
        return body.decode(encoding)
    except (UnicodeDecodeError, LookupError):
        return None


def _sniff_utf16(body: bytes) -> str | None:
    """UTF-16 without a BOM: mostly-ASCII text puts a zero in every other byte."""
    head = body[:_SNIFF_BYTES]
    if len(head) < 4 or b"\x00" not in head:
        return None
    even_zeros = head[0::2].count(0)
    odd_zeros = head[1::2].count(0)
    half = len(head) // 2
    if odd_zeros > 0.4 * half and even_zeros < 0.05 * half:
        return "utf-16-le"
    if even_zeros > 0.4 * half and odd_zeros < 0.05 * half:
        return "utf-16-be"
    return None


def _guess(body: bytes) -> str | None:
    """charset_normalizer's best guess; windows-1252, the web's legacy default, when it cannot
    tell that apart from its best guess (a few accented letters read the same in cp1250 and
    cp1252) or when it has no guess at all but the bytes are valid windows-1252."""
    matches = charset_normalizer.from_bytes(body[:_SNIFF_BYTES])
    best = matches.best()
    if best is None:
        return "cp1252" if _strict(body, "cp1252") is not None else None
    for match in matches:
        if codec_name(match.encoding) == "cp1252" and match.chaos <= best.chaos and match.coherence >= best.coherence:
            return "cp1252"
    return codec_name(best.encoding)


def decode_body(body: bytes, declared: str | None = None, detected: str | None = None) -> Decoded:
    """Decode a fetched body; see the module docstring for the order of the attempts."""
    if not body:
        return Decoded("", "utf-8", "empty", False)

    if marked := sniff_bom(body):
        bom, encoding = marked
        payload = body[len(bom) :]
        text = _strict(payload, encoding)
        if text is not None:
            return Decoded(text, encoding, "bom", False)
        return Decoded(payload.decode(encoding, errors="replace"), encoding, "bom", True)

    for method, label in (("declared", declared), ("detected", detected)):
        encoding = codec_name(label)
        text = _strict(body, encoding)
        if text is not None:
            return Decoded(text, encoding, method, False)

    encoding = _sniff_utf16(body)
    text = _strict(body, encoding)
    if text is not None:
        return Decoded(text, encoding, "sniffed", False)

    text = _strict(body, "utf-8")
    if text is not None:
        return Decoded(text, "utf-8", "utf-8", False)

    encoding = _guess(body)
    if encoding is not None:
        text = _strict(body, encoding)
        if text is not None:
            return Decoded(text, encoding, "guessed", False)
        # the guess fitted the prefix only: keep it, but say that bytes were lost
        return Decoded(body.decode(encoding, errors="replace"), encoding, "guessed", True)

    return Decoded(body.decode("utf-8", errors="replace"), "utf-8", "fallback", True)


# U+FFFD, and C0/C1 control characters other than whitespace
_GARBAGE = re.compile(r"[\ufffd\x00-\x08\x0b\x0e-\x1f\x7f-\x9f]")


def garbage_fraction(text: str) -> float:
    """Share of characters that are U+FFFD or control characters: near zero for any real text,
    high for binary data decoded as if it were text."""
    if not text:
        return 0.0
    return sum(1 for _ in _GARBAGE.finditer(text)) / len(text)
