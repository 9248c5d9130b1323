"""What character encoding a fetched body is in: declared by its source, or detected.

The crawl stores bodies as raw bytes and records two hints for the clean stage, which decodes:
`declared` is what the document says (Content-Type charset, else for HTML a `<meta charset>`
or `http-equiv` tag or an XML declaration, else a byte-order mark); `detected` is
charset_normalizer's guess, computed only when nothing is declared or the declared encoding
does not decode the bytes. Names are Python codec names (`windows-1252` -> `cp1252`) when
Python knows the label; an unknown label is kept as written, lowercased (and then `detected`
is filled, since it cannot decode anything).
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass

from lm_core.bom import sniff_bom

HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})
_PRESCAN_BYTES = 4096  # the HTML standard looks for <meta charset> in the first 1024; pages are sloppier
_META_CHARSET = re.compile(rb"""<meta[^>]*?charset\s*=\s*["']?\s*([a-zA-Z0-9_.:-]+)""", re.IGNORECASE)
_XML_DECLARATION = re.compile(rb"""^\s*<\?xml[^>]*encoding\s*=\s*["']([a-zA-Z0-9_.:-]+)""", re.IGNORECASE)


@dataclass(frozen=True)
class Encodings:
    declared: str | None
    detected: str | None

    @property
    def best(self) -> str:
        """The encoding to decode with for our own use (link extraction)."""
        for name in (self.declared, self.detected):
            if name and codec_name(name) is not None:
                return name
        return "utf-8"


def media_type(content_type: str | None) -> str | None:
    """`text/HTML; charset=x` -> `text/html`."""
    if not content_type:
        return None
    media = content_type.split(";", 1)[0].strip().lower()
    return media or None


def header_charset(content_type: str | None) -> str | None:
    if not content_type:
        return None
    for param in content_type.split(";")[1:]:
        key, _, value = param.partition("=")
        if key.strip().lower() == "charset":
            value = value.strip().strip("\"'").strip()
            return value or None
    return None


def codec_name(label: str) -> str | None:
    try:
        return codecs.lookup(label).name
    except LookupError:
        return None


def _canonical(label: str) -> str:
    label = label.strip().lower()
    return codec_name(label) or label


def declared_encoding(body: bytes, content_type: str | None, media: str | None) -> str | None:
    label = header_charset(content_type)
    if label is None and media in HTML_TYPES:
        head = body[:_PRESCAN_BYTES]
        m = _META_CHARSET.search(head) or _XML_DECLARATION.search(head)
        label = m.group(1).decode("ascii") if m else None
    if label is None:
        marked = sniff_bom(body)
        label = marked[1] if marked else None
    return _canonical(label) if label else None


def _decodes(body: bytes, encoding: str) -> bool:
    try:
        body.decode(encoding)
        return True
    except (UnicodeDecodeError, LookupError):
        return False


def detect_encoding(body: bytes) -> str | None:
    """charset_normalizer's best guess, or None for bytes that look like no text at all."""
    if _decodes(body, "utf-8"):  # exact and cheap; the common case
        return "utf-8"
    from charset_normalizer import from_bytes  # only for what is not UTF-8

    best = from_bytes(body).best()
    return _canonical(best.encoding) if best is not None else None


def sniff(body: bytes, content_type: str | None, media: str | None = None) -> Encodings:
    """The declared encoding of `body`, and a detected one when the declared is missing or wrong."""
    media = media if media is not None else media_type(content_type)
    declared = declared_encoding(body, content_type, media)
    if declared is not None and _decodes(body, declared):
        return Encodings(declared, None)
    return Encodings(declared, detect_encoding(body))
