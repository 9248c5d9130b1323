"""Scrubbing personal data: e-mail addresses, IP addresses and phone numbers.

Each finder is a regular expression that casts a wide net, followed by a check that throws back
what is not the real thing: `ipaddress` validates addresses (and tells public from private),
and a phone number must have the digit count of one and not look like a date. Version numbers
("3.11.7"), dates ("2024-01-15"), times, and digit runs in code ("0x1F2E3D4C", "12345678901")
are left alone.
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter
from dataclasses import dataclass, field

from lm_core.config import PIIConfig

PII_KINDS = ("email", "ip", "phone")

_EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]{1,64}@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}\b")

# Candidates only: every match is validated by `ipaddress`.
_IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w.]*\w)")
_IPV6 = re.compile(
    r"(?<![\w:.])"
    r"(?:[0-9A-Fa-f]{0,4}:){2,7}(?:[0-9A-Fa-f]{1,4}|(?:\d{1,3}\.){3}\d{1,3})?"
    r"(?![\w:])"
)

_SEP = r"[ .\-]"
_PHONE = re.compile(
    r"(?<![\w+/.\-])(?:"
    # international: +CC then groups, e.g. +44 20 7946 0958, +1-202-555-0143, +4915112345678
    rf"\+\d{{1,3}}(?:{_SEP}?\(\d{{1,4}}\))?{_SEP}?\d{{1,5}}(?:{_SEP}?\d{{2,5}}){{0,4}}"
    # North American: (202) 555-0143, 202-555-0143, 202.555.0143, 202 555 0143
    rf"|\(\d{{3}}\){_SEP}?\d{{3}}{_SEP}\d{{4}}"
    rf"|\d{{3}}(?P<nanp>{_SEP})\d{{3}}(?P=nanp)\d{{4}}"
    # national with a trunk 0: 020 7946 0958, 06 12 34 56 78, 030-12345678, (030) 1234567
    rf"|0\d{{1,4}}(?:{_SEP}|/)\d{{2,8}}(?:{_SEP}\d{{2,8}}){{0,3}}"
    rf"|\(0\d{{1,4}}\){_SEP}?\d{{3,8}}(?:{_SEP}\d{{2,8}}){{0,2}}"
    r")(?![\w/]|[.:\-]\d)"
)
_DATE_LIKE = re.compile(r"^(?:1[89]|20)\d\d\D(?:0?[1-9]|1[0-2])\D|^\d{1,2}\D\d{1,2}\D(?:1[89]|20)\d\d$")


@dataclass
class Scrubbed:
    text: str
    counts: Counter = field(default_factory=Counter)  # kind -> replacements made


def _is_ip(candidate: str, only_public: bool) -> bool:
    try:
        address = ipaddress.ip_address(candidate)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and (
        not any(c.isdigit() for c in candidate) or sum(1 for g in candidate.split(":") if g) < 2
    ):
        return False  # hex-looking words ("add::"), slices in code ("x[::2]"), "::1"
    return address.is_global if only_public else True


def _is_phone(candidate: str) -> bool:
    digits = sum(c.isdigit() for c in candidate)
    if candidate.startswith("+"):
        return 8 <= digits <= 15  # E.164 allows at most 15 digits, country code included
    return 9 <= digits <= 13 and not _DATE_LIKE.search(candidate)


def scrub_pii(text: str, cfg: PIIConfig) -> Scrubbed:
    """Replace e-mail addresses, IP addresses and phone numbers as `cfg` says; count them."""
    counts: Counter = Counter()

    def replace(pattern: re.Pattern, kind: str, keep_if, replacement: str, s: str) -> str:
        def sub(m: re.Match) -> str:
            if not keep_if(m.group(0)):
                return m.group(0)
            counts[kind] += 1
            return replacement

        return pattern.sub(sub, s)

    if cfg.emails and "@" in text:
        text = replace(_EMAIL, "email", lambda s: True, cfg.email_replacement, text)
    if cfg.ip_addresses:
        if "." in text:
            text = replace(_IPV4, "ip", lambda s: _is_ip(s, cfg.only_public_ips), cfg.ip_replacement, text)
        if "::" in text or text.count(":") >= 7:
            text = replace(_IPV6, "ip", lambda s: _is_ip(s, cfg.only_public_ips), cfg.ip_replacement, text)
    if cfg.phone_numbers:
        text = replace(_PHONE, "phone", _is_phone, cfg.phone_replacement, text)
    return Scrubbed(text, counts)
