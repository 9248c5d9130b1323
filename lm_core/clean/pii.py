"""Scrubbing personal data and credentials: e-mail addresses, IP addresses, phone numbers, and
secrets (API keys and tokens, private keys, passwords in URLs and in secret-named variables).

Each finder is a cheap regular expression that proposes candidates, followed by a check that
throws back what is not the real thing, since technical text is full of look-alikes:

- Phone numbers are validated by `phonenumbers` (Google's libphonenumber metadata). A number
  written with its country code ("+44 20 7946 0958", "tel:+1-202-555-0143", "0044 20 …") must be
  a valid number of that country. One written without (`(202) 555-0143`, `020 7946 0958`) cannot
  be placed without knowing the country, and almost any digit group is valid somewhere: it must
  be valid in one of `phone_regions` (default: the countries an English-language corpus quotes
  national numbers from) and grouped as that country writes its numbers, so "2 147 483 647" is
  not (214) 748-3647. Bare digit runs, dates, hex dumps and numeric tables are left alone.
- IPv4 addresses are judged by their context, since "GCC 2.7.2.2", "version 1.2.3.4", an OID
  (2.5.4.3) or a section number (4.2.1.3) are dotted quads too. One is an address in a URL, after
  `user@`, in brackets, before a port or prefix length (`:8080`, `/24`), or after a network word
  ("server", "host", "IP", "from", "ping", … among the four words before it). It is not after a
  version word ("version", "build", "section", "OID", …) or before one ("the 1.2.3.4 release"),
  after `==`, `-` or a product's `/` ("Chrome/4.0.249.89"), after a name when its first number is
  small ("GCC 2.7.2.2"), nor when it opens a line as a heading does ("4.2.1.3 Scope"). Otherwise
  it is an address unless it looks like a version or an OID (first number up to 30 and the next
  two below 100; or first number 0, 1 or 2). `ipaddress` validates every candidate and, with
  `only_public_ips`, keeps private, loopback, reserved and documentation addresses. IPv6 needs a
  digit and a group of three or more hex digits (not a MAC address or a slice `x[1::2]`).
- E-mail addresses are the usual pattern, less what only looks like one: high-density image
  names ("logo@2x.png"), method calls ("q@k.transpose("), and remote paths ("git@github.com:org/
  repo.git").

Code blocks, which the clean stage fences Markdown-style (a line of three or more backticks,
optionally with a language, then the same fence after the code), are full of numbers, hex and
versions: inside them a phone number counts only if it carries its country code ("+…") or its
line names a phone ("phone", "tel", "fax", …), and an IPv4 address only with evidence (a network
word, URL, port, prefix; or opening its line, as in a log or hosts file), never by its looks
alone. Secrets and e-mail addresses are scrubbed alike in prose and code. On the labelled set
this costs some recall in code and no precision; read as prose, the same code gave false alarms.

Secrets are caught only in the forms that announce themselves: a provider's prefix (`AKIA…`,
`ghp_…`, `xoxb-…`, `sk_live_…`), a PEM private key block, the password in a URL's userinfo, or
a value assigned to a name that ends with a word saying it is one (`AWS_SECRET_ACCESS_KEY=…`,
`'DB_PASSWORD': '…'`, `api_key: …`, `x-api-key: …`, but not `tokenizer_name` or
`password_reset_url`) and that looks like one (8 or more characters, letters and digits). A page
that dumps a configuration or an environment (a leaked `.env`, a debug page, `os.environ` in
generated docs) must not become training text. Secrets go first: a URL's password would
otherwise be half-read as an e-mail address (`user:pw@host.example`).

The precision and recall of each kind are measured on a labelled set by bench/pii_precision.py.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections import Counter
from dataclasses import dataclass, field

import phonenumbers

from lm_core.config import PIIConfig

PII_KINDS = ("secret", "email", "ip", "phone")

# A corpus holds numbers of many countries: keep phonenumbers' compiled patterns, which would
# otherwise fall out of `re`'s bounded cache and be recompiled (half the time of a dense text).
if hasattr(phonenumbers, "enable_pattern_cache"):  # phonenumbers >= 9
    phonenumbers.enable_pattern_cache()

# ----------------------------------------------------------------------------- secrets

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
# What every token above starts with: a text holding none of these (most texts) skips the regex,
# which is slow to run over a whole text (it is tried at every position).
_TOKEN_STARTS = (
    *("AKIA", "ASIA", "ABIA", "ACCA"),
    *("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_", "glpat-"),
    *("xoxa-", "xoxb-", "xoxp-", "xoxo-", "xoxs-", "xoxr-"),
    *("AIza", "sk_live_", "rk_live_", "sk-", "hf_", "eyJ"),
)
_PRIVATE_KEY = re.compile(r"-----BEGIN ((?:[A-Z0-9]+ )*)PRIVATE KEY-----.*?-----END \1PRIVATE KEY-----", re.S)
# scheme://user:PASSWORD@host: the password only
_URL_PASSWORD = re.compile(r"(?<=://)(?P<keep>[^\s:/@]+:)(?P<secret>[^\s/@]+)(?=@)")
# NAME = VALUE, 'NAME': 'VALUE', NAME: VALUE, where the name ends with a word that says secret
# (`tokenizer_name`, `password_reset_url`, `max_tokens` do not): the value only. The match starts
# at that word (`AWS_` of `AWS_SECRET_ACCESS_KEY` stays out of it); the lookahead on its first
# letters lets the regex engine skip ahead instead of trying every position.
_SECRET_WORDS = ("password", "passwd", "passphrase", "secret", "token", "credential")
_KEY_QUALIFIERS = ("api", "access", "secret", "private", "auth", "client")  # api_key, apiKey, x-api-key, ...
_FIRST_LETTERS = "".join(sorted({c for w in _SECRET_WORDS + _KEY_QUALIFIERS for c in (w[0], w[0].upper())}))
_SECRET_NAME_END = (
    rf"(?=[{_FIRST_LETTERS}])(?i:{'|'.join(_SECRET_WORDS)}s?|(?:{'|'.join(_KEY_QUALIFIERS)})[_-]?key(?:[_-]?base)?)"
)
_SECRET_VALUE = r"[A-Za-z0-9/+=_.~!#$%&*^@-]"
_SECRET_VARIABLE = re.compile(
    rf"""(?P<keep>{_SECRET_NAME_END}['"]?[ \t]*[:=][ \t]*['"]?)"""
    # bounded: a run of "password=password=…" would otherwise be rescanned from each of its words
    rf"(?P<secret>(?={_SECRET_VALUE}{{0,1023}}\d)(?={_SECRET_VALUE}{{0,1023}}[A-Za-z]){_SECRET_VALUE}{{8,1024}})"
    r"""(?=['"\s,;)}\]]|$)"""
)
# What must follow a secret word or a key qualifier's "key" for _SECRET_VARIABLE to match there
_AFTER_SECRET_WORD = re.compile(r"""s?['"]?[ \t]*[:=]""")
_AFTER_KEY = re.compile(r"""(?:[_-]?base)?['"]?[ \t]*[:=]""")


def _may_assign_a_secret(lowered: str) -> bool:
    """Whether the lowercased text holds a name _SECRET_VARIABLE could match (a secret word, or
    "key" after a qualifier, then an assignment): found with str.find, so that the regex, slow
    to run over a whole text, runs only on the few texts that may have one. (Python docs say
    "token" and "key" on every page, but seldom `token:` or `api_key=`.)"""
    for word in _SECRET_WORDS:
        at = lowered.find(word)
        while at >= 0:
            if _AFTER_SECRET_WORD.match(lowered, at + len(word)):
                return True
            at = lowered.find(word, at + 1)
    at = lowered.find("key")
    while at >= 0:
        if lowered[max(at - 8, 0) : at].rstrip("_-").endswith(_KEY_QUALIFIERS) and _AFTER_KEY.match(lowered, at + 3):
            return True
        at = lowered.find("key", at + 1)
    return False


# ----------------------------------------------------------------------------- e-mail

_EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]{1,64}@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}\b")
# what follows or fills an address-shaped match that is not one: a method call `q@k.transpose(`,
# a remote path `git@github.com:org/repo.git`, an image for high-density screens `logo@2x.png`
_NOT_EMAIL_AFTER = re.compile(r"\(|:[\w~/.-]")
_IMAGE_DENSITY = re.compile(r"@\d+(?:\.\d+)?x\.")

# ----------------------------------------------------------------------------- IP addresses

# Candidates only: every match is validated by `ipaddress` and judged by its context.
_IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w.]*\w)")
_IPV6 = re.compile(
    r"(?<![\w:.])"
    r"(?:[0-9A-Fa-f]{0,4}:){2,7}(?:[0-9A-Fa-f]{1,4}|(?:\d{1,3}\.){3}\d{1,3})?"
    r"(?![\w:])"
)
# words that announce an address in the few words before it (plural and past forms match too)
_NETWORK_WORDS = frozenset(
    "ip ips ipv4 ipv6 address addr host hostname server client peer remote gateway gw router dns nameserver "
    "resolver proxy connect connection from ping ssh telnet traceroute nslookup dig curl wget inet listen "
    "listening bind src dst source destination origin subnet route block ban banned firewall forward allow "
    "deny public static endpoint upstream backend node geoip whois lookup attacker visitor sender relay mx".split()
)
# words that make a dotted quad right after them (or the word right after it) a version or a number
_VERSION_WORDS = frozenset(
    "v ver version release rel rev revision build firmware driver update upgrade downgrade patch "
    "oid section sec chapter ch clause figure fig table step part paragraph para appendix rule item page".split()
)
_WORD = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])")  # words of camelCase and snake_case names too
_IP_AFTER_YES = re.compile(r":\d{1,5}(?!\d)|/\d{1,3}(?![\d.])|\s+port\b")
_IP_BEFORE_NO = re.compile(r"(?:==|~=|>=|<=|[-_^~/])$")
_IP_AFTER_NO = re.compile(r"-[A-Za-z]")
_PRODUCT_BEFORE = re.compile(r"(?<![\w.])[\w+-]*[A-Z][\w+-]* $")  # a name: GCC, Firefox, iTunes

# ----------------------------------------------------------------------------- phone numbers

# Digit groups with the separators people write between them ("+1 (202) 555-0143", "020 7946
# 0958", "06.12.34.56.78", "+44 (0)20 …"); a separator is required between plain digit groups,
# which keeps the regex linear and leaves bare digit runs (ids, counts, timestamps) alone.
_PART = r"(?:\(\+?\d{1,5}\)|\d{1,12})"
_SEP = r"(?:[\-./ \u00a0]|(?<=\))|(?=\())"  # one: "030 123 / 0171 456" are two numbers
_PHONE = re.compile(
    rf"(?<![\w+/.\-@$€£¥#%])(?<!\d:)(?:\+\d{{6,15}}|\+?{_PART}(?:{_SEP}{_PART}){{1,7}})(?![\w/@%]|[.,:\-]\d)"
)
_YEAR = r"(?:1[89]|20)\d\d"
# dates (2024-01-15, 15.01.2024) and year ranges (1999-2008)
_DATE_LIKE = re.compile(rf"^{_YEAR}\D(?:0?[1-9]|1[0-2])\D|^\d{{1,2}}\D\d{{1,2}}\D{_YEAR}$|^{_YEAR} ?[-/] ?{_YEAR}$")
# an IPv4 address, a decimal number, dots mixed with other separators (1.319 590 8951, 169.254/16)
_NOT_PHONE_SHAPE = re.compile(r"^\d{1,3}(?:\.\d{1,3}){3}$|^\+?\d+\.\d+$|^[^+].*\.\d.*[ /]|^[^+].*[ /].*\.\d")
_PHONE_WORDS = re.compile(r"(?i)phone|\btel\b|\bfax\b|mobile|\bcell|whatsapp|\bsms\b|hotline|helpline|\bcall\b|\bdial")

# ----------------------------------------------------------------------------- code blocks

_FENCE = re.compile(r"^ {0,3}(`{3,})[^`\n]*$", re.M)

# ----------------------------------------------------------------------------- where to look

# The lines that can hold a match of a finder: each of these matches runs from the first place in
# a line that holds what every match of the finder holds (an "@", a digit, a digit-dot-digit, two
# colons) to the line's end. No match of those finders spans a line break, and their lookarounds
# read a line's end as they read the text's end, so searching these lines alone finds the same
# matches. (Most of a page is prose without digits; a finder tried at each of its characters
# costs more than skipping to the few lines worth trying.)
_LINES_WITH_AT = re.compile(r"@.*")
_LINES_WITH_DIGIT = re.compile(r"\d.*")
_LINES_WITH_DOTTED_DIGITS = re.compile(r"\d\.\d.*")
_LINES_WITH_TWO_COLONS = re.compile(r":.*:.*")
_LINES_TO_SEARCH = {
    _EMAIL: _LINES_WITH_AT,
    _IPV4: _LINES_WITH_DOTTED_DIGITS,
    _IPV6: _LINES_WITH_TWO_COLONS,
    _PHONE: _LINES_WITH_DIGIT,
}


@dataclass
class Scrubbed:
    text: str
    counts: Counter = field(default_factory=Counter)  # kind -> replacements made


def _segments(text: str) -> list[tuple[str, bool]]:
    """`text` cut into (part, is_code): code runs from a fence line to the next line holding the
    same fence, fences included; a fence never closed runs to the end, as in CommonMark."""
    if "```" not in text:
        return [(text, False)]
    parts, pos = [], 0
    while opening := _FENCE.search(text, pos):
        close = re.compile(rf"^ {{0,3}}{opening.group(1)}[ \t]*$", re.M).search(text, opening.end())
        end = close.end() if close else len(text)
        parts += [(text[pos : opening.start()], False), (text[opening.start() : end], True)]
        pos = end
    parts.append((text[pos:], False))
    return parts


def _line_around(s: str, start: int, end: int, reach: int = 200) -> tuple[str, str]:
    """The text before `start` and after `end` on the same line, at most `reach` characters each
    (a long line, minified code or a log, must not be rescanned for each of its candidates)."""
    lo, hi = max(0, start - reach), min(len(s), end + reach)
    line_end = s.find("\n", end, hi)
    return s[s.rfind("\n", lo, start) + 1 or lo : start], s[end : hi if line_end < 0 else line_end]


def _words(text: str) -> list[set[str]]:
    """The words of `text`, split at underscores and case changes (remote_addr, serverAddress), each
    as its lower-case forms with and without a plural or past-tense ending (hosts, released)."""
    forms = []
    for word in map(str.lower, _WORD.findall(text)):
        forms.append({word, word[:-1], word[:-2]} if len(word) > 3 and word[-1] in "sd" else {word})
    return forms


def _is_email(m: re.Match) -> bool:
    return not (_NOT_EMAIL_AFTER.match(m.string, m.end()) or _IMAGE_DENSITY.search(m.group()))


def _is_public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return address.is_global and not address.is_reserved and not address.is_multicast


def _is_ipv4(m: re.Match, only_public: bool, in_code: bool) -> bool:
    try:
        address = ipaddress.IPv4Address(m.group())
    except ValueError:
        return False
    if only_public and not _is_public(address):
        return False
    before, after = _line_around(m.string, m.start(), m.end())
    words = _words(before[-48:])[-4:]
    if before.endswith(("://", "@")) or _IP_AFTER_YES.match(after) or (before.endswith("[") and after[:1] == "]"):
        return True  # in a URL, after user@, in [brackets] (mail headers), followed by a port or prefix length
    next_word = _words(after[:16])[:1]
    if (
        _IP_BEFORE_NO.search(before)
        or _IP_AFTER_NO.match(after)
        or any(_VERSION_WORDS & w for w in words[-3:] + next_word)
    ):
        return False  # pkg==1.2.3.4, fix-1.2.3.4, Chrome/4.0.249.89, 1.2.3.4-beta, version 1.2.3.4, the 1.2.3.4 release
    if any(_NETWORK_WORDS & w for w in words):
        return True
    first, second, third, _ = address.packed
    if first <= 30 and _PRODUCT_BEFORE.search(before):
        return False  # a name before a small major number: GCC 2.7.2.2, Firefox 30.10.48.195
    # 2.7.2.2, 4.2.1.3, 6.1.24.194; an OID's first arc is 0, 1 or 2 (1.3.101.112)
    looks_like_version = first <= 2 or (first <= 30 and second < 100 and third < 100)
    if not before.strip():  # opening its line: a log line, a hosts file; or a heading "4.2.1.3 Scope"
        return not looks_like_version and not re.match(r"\.?\s+[A-Z]", after)
    return not in_code and not looks_like_version  # code needs evidence: it is full of versions


def _is_ipv6(m: re.Match, only_public: bool) -> bool:
    candidate = m.group()
    try:
        address = ipaddress.IPv6Address(candidate)
    except ValueError:
        return False
    groups = [g for g in candidate.split(":") if g]
    # hex-looking words ("add::"), slices ("x[1::2]"), MAC and WWN addresses (two-digit groups)
    if len(groups) < 2 or not any(c.isdigit() for c in candidate) or max(map(len, groups)) < 3:
        return False
    return _is_public(address) if only_public else True


def _group_cuts(text: str, significant: int) -> set[int]:
    """Where `text` breaks its digits into groups, counted from the last digit, within the last
    `significant` digits (the national significant number: trunk and country code aside)."""
    cuts, pos = set(), 0
    for group in reversed(re.findall(r"\d+", text)[1:]):
        pos += len(group)
        cuts.add(pos)
    return {c for c in cuts if c < significant}


def _is_phone(m: re.Match, regions: tuple[str, ...], in_code: bool) -> bool:
    candidate = m.group()
    digits = sum(c.isdigit() for c in candidate)
    international = "+" in candidate[:2]  # +44 …, (+44) …
    if not (6 if international else 7) <= digits <= 15 or _DATE_LIKE.search(candidate):
        return False
    if _NOT_PHONE_SHAPE.match(candidate) or not (international or regions):
        return False
    if in_code and not international and not _PHONE_WORDS.search("".join(_line_around(m.string, m.start(), m.end()))):
        return False  # code: only a number that carries its country, or on a line that names a phone
    return _valid_phone(candidate, (None,) if international else regions)


@functools.cache
def _region_lengths(region: str) -> tuple[str, re.Pattern, frozenset[int]]:
    """`region`'s trunk prefix, international prefix and lengths of its numbers, from phonenumbers' metadata."""
    meta = phonenumbers.PhoneMetadata.metadata_for_region(region)
    lengths = frozenset(meta.general_desc.possible_length)
    return meta.national_prefix or "", re.compile(meta.international_prefix or "$^"), lengths


def _could_be_national(digits: str, region: str) -> bool:
    """A cheap look at `region`'s metadata before parsing: a number dialled from there starts with
    its international prefix (00, 011), or has one of its lengths, trunk prefix (0, 1) aside."""
    trunk, international, lengths = _region_lengths(region)
    if international.match(digits):
        return True
    return len(digits) - (len(trunk) if trunk and digits.startswith(trunk) else 0) in lengths


@functools.lru_cache(maxsize=4096)  # the same numbers recur: a site's footer is on each of its pages
def _valid_phone(candidate: str, regions: tuple[str | None, ...]) -> bool:
    """A valid number of the country its "+" names (`regions` (None,)), or of one of `regions` and
    written as that country writes it."""
    digits = re.sub(r"\D", "", candidate)
    for region in regions:
        if region and not _could_be_national(digits, region):
            continue
        try:
            number = phonenumbers.parse(candidate, region)
        except phonenumbers.NumberParseException:
            continue
        if not phonenumbers.is_valid_number(number):
            continue
        if region is None:
            return True  # the country code and a valid number are evidence enough
        # written as the country writes it: its trunk prefix there (020 …, not 20 …; "2 147 483 647"
        # is no German number), and no group of the candidate straddles one of the number's
        national = number.country_code == phonenumbers.country_code_for_region(region)
        style = phonenumbers.PhoneNumberFormat.NATIONAL if national else phonenumbers.PhoneNumberFormat.INTERNATIONAL
        as_written = phonenumbers.format_number(number, style)
        if not digits.endswith(re.sub(r"\D", "", as_written)):
            continue
        significant = len(phonenumbers.national_significant_number(number))
        ours, theirs = _group_cuts(candidate, significant), _group_cuts(as_written, significant)
        if ours <= theirs or theirs <= ours:
            return True
    return False


def scrub_pii(text: str, cfg: PIIConfig) -> Scrubbed:
    """Replace secrets, e-mail addresses, IP addresses and phone numbers as `cfg` says; count them."""
    counts: Counter = Counter()

    def replace(pattern: re.Pattern, kind: str, keep_if, replacement: str, s: str) -> str:
        """Replace each match (or its `secret` group, keeping its `keep` group) that `keep_if` accepts,
        searching only the lines that can hold one when the finder has a _LINES_TO_SEARCH."""

        def sub(m: re.Match) -> str:
            if not keep_if(m):
                return m.group(0)
            counts[kind] += 1
            return (m.group("keep") if "keep" in pattern.groupindex else "") + replacement

        lines = _LINES_TO_SEARCH.get(pattern)
        if lines is None:
            return pattern.sub(sub, s)
        out, done = [], 0  # `pattern.sub` over the whole of `s`, searched in its `lines` only
        for line in lines.finditer(s):
            start = s.rfind("\n", done, line.start()) + 1 or done  # the line's start (or the last match's end)
            for m in pattern.finditer(s, start, line.end()):  # m.string is all of `s`: the same context
                out += (s[done : m.start()], sub(m))
                done = m.end()
        return "".join((*out, s[done:])) if out else s

    def always(m: re.Match) -> bool:
        return True

    if cfg.secrets:
        if "PRIVATE KEY-----" in text:
            text = replace(_PRIVATE_KEY, "secret", always, cfg.secret_replacement, text)
        if any(start in text for start in _TOKEN_STARTS):
            text = replace(_SECRET_TOKEN, "secret", always, cfg.secret_replacement, text)
        if "://" in text:
            text = replace(_URL_PASSWORD, "secret", always, cfg.secret_replacement, text)
        if _may_assign_a_secret(text.lower()):
            text = replace(_SECRET_VARIABLE, "secret", always, cfg.secret_replacement, text)
    if cfg.emails and "@" in text:
        text = replace(_EMAIL, "email", _is_email, cfg.email_replacement, text)
    if not (cfg.ip_addresses or cfg.phone_numbers):
        return Scrubbed(text, counts)
    regions, public = tuple(cfg.phone_regions), cfg.only_public_ips
    parts = []
    for part, in_code in _segments(text):  # phone numbers and IPs: code is judged more strictly
        if cfg.ip_addresses and "." in part:
            part = replace(_IPV4, "ip", lambda m: _is_ipv4(m, public, in_code), cfg.ip_replacement, part)  # noqa: B023
        if cfg.ip_addresses and ("::" in part or part.count(":") >= 7):
            part = replace(_IPV6, "ip", lambda m: _is_ipv6(m, public), cfg.ip_replacement, part)
        if cfg.phone_numbers:
            part = replace(_PHONE, "phone", lambda m: _is_phone(m, regions, in_code), cfg.phone_replacement, part)  # noqa: B023
        parts.append(part)
    return Scrubbed("".join(parts), counts)
