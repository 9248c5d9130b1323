"""The rows every crawl source emits: a document (schema RAW_DOC) or a failure (schema FAILURE)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from lm_core.crawl.encoding import Encodings


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Doc:
    row: dict[str, Any]


@dataclass(frozen=True)
class Failure:
    row: dict[str, Any]


def doc(
    url: str,
    source: str,
    body: bytes,
    *,
    content_type: str | None,
    encodings: Encodings,
    status: int | None = None,
    fetched_at: datetime | None = None,
) -> Doc:
    return Doc({
        "url": url,
        "source": source,
        "fetched_at": fetched_at or utc_now(),
        "status": status,
        "content_type": content_type,
        "declared_encoding": encodings.declared,
        "detected_encoding": encodings.detected,
        "body": bytes(body),
    })  # fmt: skip


def failure(url: str, source: str, reason: str, detail: str | None = None, status: int | None = None) -> Failure:
    return Failure(
        {"url": url, "source": source, "reason": reason, "detail": detail, "status": status, "at": utc_now()}
    )
