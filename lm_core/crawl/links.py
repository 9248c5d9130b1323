"""The links a crawler follows out of an HTML page.

Only hyperlinks are followed: `<a href>` and `<area href>`, resolved against `<base href>` when
the page has one. Stylesheets, scripts, images and frames are not documents to train on.
Nofollow is honoured, as a polite crawler does: a link with `rel="nofollow"` is skipped, and a
page with `<meta name="robots" content="nofollow">` (or `none`) yields no links at all.
(`noindex` is not acted on: the page itself is still kept.) Non-http(s) schemes are dropped
later, by normalisation.
"""

from __future__ import annotations

from urllib.parse import urljoin

import lxml.html
from lxml import etree


def _parse(body: bytes, encoding: str) -> etree._Element | None:
    text = body.decode(encoding, errors="replace")
    try:
        return lxml.html.document_fromstring(text)
    except ValueError:  # a str with an XML encoding declaration: let libxml2 read the bytes
        try:
            return lxml.html.document_fromstring(body)
        except (etree.LxmlError, ValueError):
            return None
    except etree.LxmlError:  # an empty or whitespace-only document, or worse
        return None


def _robots_meta_nofollow(root: etree._Element) -> bool:
    for meta in root.iter("meta"):
        if (meta.get("name") or "").strip().lower() == "robots":
            directives = {d.strip().lower() for d in (meta.get("content") or "").split(",")}
            if directives & {"nofollow", "none"}:
                return True
    return False


def extract_links(body: bytes, page_url: str, encoding: str = "utf-8") -> list[str]:
    """Absolute (not yet normalised) link targets of an HTML page, in document order, without
    repeats."""
    root = _parse(body, encoding)
    if root is None or _robots_meta_nofollow(root):
        return []
    base = page_url
    for tag in root.iter("base"):
        href = (tag.get("href") or "").strip()
        if href:
            try:
                base = urljoin(page_url, href)
            except ValueError:
                pass
            break  # only the first <base> counts
    out: dict[str, None] = {}
    for el in root.iter("a", "area"):
        href = el.get("href")
        if not href or not href.strip() or href.strip().startswith("#"):
            continue
        if "nofollow" in (el.get("rel") or "").lower().split():
            continue
        try:
            out.setdefault(urljoin(base, href.strip()), None)
        except ValueError:  # e.g. an unbalanced IPv6 bracket: kept raw, normalisation refuses it as bad_url
            out.setdefault(href.strip(), None)
    return list(out)
