"""Scrubbing personal data and credentials: e-mail addresses, IP addresses, phone numbers, and
secrets (API keys and tokens, private keys, passwords in URLs and in secret-named variables).

Each finder is a regular expression that casts a wide net, followed by a check that throws back
what is not the real thing: `ipaddress` validates addresses (and tells public from private),
and a phone number must have the digit count of one and not look like a date. Version numbers
("3.11.7"), dates ("2024-01-15"), times, and digit runs in code ("0x1F2E3D4C", "12345678901")
are left alone.

Secrets are caught only in the forms that announce themselves: a provider's prefix (`AKIA…`,
`ghp_…`, `xoxb-…`, `sk_live_…`), a PEM private key block, the password in a URL's userinfo, or
a value assigned to a name that says it is one (`AWS_SECRET_ACCESS_KEY=…`, `'DB_PASSWORD': '…'`,
`api_key: …`) and looks like one (8 or more characters, letters and digits). A page that dumps
a configuration or an environment (a leaked `.env`, a debug page, `os.environ` in generated
docs) must not become training text. Secrets go first: a URL's password would otherwise be
half-read as an e-mail address (`user:pw@host.example`).
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter
from dataclasses import dataclass, field

from lm_core.config import PIIConfig

PII_KINDS = ("secret", "email", "ip", "phone")

_SECRET_TOKEN = re.compile(
    r"(?<![\w/+-])(?:"
    r"(?:AKIA|ASIA|ABIA|ACCA)[0-9A-Z]{16}"  # AWS access key id
    r"|gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{60,255}"  # GitHub
    r"|glpat-[A-Za-z0-9_-]{20,}"  # GitLab
    r"|xox[abposr]-[A-Za-z0-9-]{10,}"  # Slack
    r"|AIza[0-9A-Za-z_-]{35}"  # Google API key
    r"|[sr]k_live_[0-9A-Za-z]{24,}"  # Stripe
    r"|sk-(?:proj-|ant-)?[A-Za-z0-9_-]{32,}"  # OpenAI, Anthropic
    r"|hf_[A-Za-z0-9]{30,}"  # Hugging Face
    r"|eyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}"  # a JSON Web Token
    r")(?![\w-])"
)
_PRIVATE_KEY = re.compile(r"-----BEGIN ((?:[A-Z0-9]+ )*)PRIVATE KEY-----.*?-----END \1PRIVATE KEY-----", re.S)
# scheme://user:PASSWORD@host: the password only
_URL_PASSWORD = re.compile(r"(?<=://)(?P<keep>[^\s:/@]+:)(?P<secret>[^\s/@]+)(?=@)")
# NAME = VALUE, 'NAME': 'VALUE', NAME: VALUE, where the name says secret: the value only. The
# match starts at the word that says so (`AWS_` of `AWS_SECRET_ACCESS_KEY` stays out of it); the
# lookahead on its first letters lets the regex engine skip ahead instead of trying every position.
_SECRET_WORDS = ("password", "passwd", "secret", "token", "api_key", "apikey", "access_key", "accesskey",
                 "private_key", "privatekey", "credential")  # fmt: skip
_FIRST_LETTERS = "".join(sorted({c for w in _SECRET_WORDS for c in (w[0], w[0].upper())}))
_SECRET_VALUE = r"[A-Za-z0-9/+=_.~!#$%&*^@-]"
_SECRET_VARIABLE = re.compile(
    rf"(?P<keep>(?=[{_FIRST_LETTERS}])(?i:{'|'.join(map(re.escape, _SECRET_WORDS))})"
    r"""[A-Za-z0-9_]*['"]?[ \t]*[:=][ \t]*['"]?)"""
    rf"(?P<secret>(?={_SECRET_VALUE}*\d)(?={_SECRET_VALUE}*[A-Za-z]){_SECRET_VALUE}{{8,}})"
    r"""(?=['"\s,;)}\]]|$)"""
)

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
    """Replace secrets, e-mail addresses, IP addresses and phone numbers as `cfg` says; count them."""
    counts: Counter = Counter()

    def replace(pattern: re.Pattern, kind: str, keep_if, replacement: str, s: str) -> str:
        """Replace each match (or its `secret` group, keeping its `keep` group) that `keep_if` accepts."""

        def sub(m: re.Match) -> str:
            if not keep_if(m.group(0)):
                return m.group(0)
            counts[kind] += 1
            return (m.group("keep") if "keep" in pattern.groupindex else "") + replacement

        return pattern.sub(sub, s)

    if cfg.secrets:
        if "PRIVATE KEY-----" in text:
            text = replace(_PRIVATE_KEY, "secret", lambda s: True, cfg.secret_replacement, text)
        text = replace(_SECRET_TOKEN, "secret", lambda s: True, cfg.secret_replacement, text)
        if "://" in text:
            text = replace(_URL_PASSWORD, "secret", lambda s: True, cfg.secret_replacement, text)
        lowered = text.lower()  # most text names no secret: skip the costlier pattern
        if any(word in lowered for word in _SECRET_WORDS):
            text = replace(_SECRET_VARIABLE, "secret", lambda s: True, cfg.secret_replacement, text)
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
