"""Builds the labelled evaluation set of the PII scrubber: bench/data/pii_eval.jsonl.

    .venv/bin/python bench/pii_eval_set.py          # rewrites bench/data/pii_eval.jsonl

For each kind (phone, ip, email, secret) it writes positives (texts holding the real thing, with
the exact character spans that must be replaced) and hard negatives (texts that look like it and
must come out unchanged). One JSON object per line:

    {"id": "phone-pos-0001", "kind": "phone", "spans": [[12, 28]], "text": "...", "source": "..."}

`spans` is empty for a negative; `source` says where the example came from.

Positives are built to be realistic rather than shaped to the scrubber's patterns: phone numbers
are the `phonenumbers` metadata's example numbers of every region and type (their last digits
varied, kept only when still valid), written in the INTERNATIONAL, NATIONAL, E164 and RFC3966
formats and the common variants people type ("+44 (0)20 …", "0044 …", dots), inside varied
sentences, tables, vCards and code. National numbers (no country code) come from the regions an
English-language web corpus quotes them from, weighted by rough prevalence, plus a tenth from any
other region: those cannot be told from digit groups without knowing the country, and measure
that limit. Negatives come from real material on this machine where there is some: hex dumps
(`xxd`, `od`, `hexdump` of installed files), numeric tables (matplotlib's and numpy's data files),
lines of the standard library's source, the versions of the installed distributions, the OIDs of
`cryptography`, the commit and blob ids and dates of this repository at a fixed commit; the rest
(ISBNs with valid check digits, UUIDs, prices, coordinates, section numbers, ...) is generated.

Records whose source starts with "batch B" or "batch C" were written after the scrubber had been
tuned on the others, and measure how it generalises: B, other sentences and formats, versions and
real lines of the installed packages (read by hand: the ones holding an address are left out, see
ADDRESS_LINES); C, code look-alikes in fenced blocks (real source lines, numpy printouts).

Deterministic: a fixed seed, inputs read in sorted order, and this repository read at a fixed
commit; the environment's files (Python 3.11.7's standard library, installed packages) are the
only other input.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import ipaddress
import json
import random
import re
import subprocess
import sys
import sysconfig
import uuid
from pathlib import Path

import phonenumbers
from phonenumbers import PhoneNumberFormat, PhoneNumberType

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "bench" / "data" / "pii_eval.jsonl"
COMMIT = "187eeeffdc753fcc94ab6ae36cb16297b9a213e6"  # this repository, read at a fixed commit
STDLIB = Path(sysconfig.get_paths()["stdlib"])
SITE = Path(sysconfig.get_paths()["purelib"])
SEED = 13
SLOT = "«»"  # where a template takes the value to be scrubbed


class Builder:
    def __init__(self) -> None:
        self.records: list[dict] = []
        self.rng = random.Random(SEED)

    def add(self, kind: str, template: str, values: list[str] | tuple[str, ...] = (), source: str = "") -> None:
        """Append a record; each SLOT in `template` is filled with the next value, whose span is labelled."""
        pieces = template.split(SLOT)
        assert len(pieces) == len(values) + 1, (template, values)
        text, spans = pieces[0], []
        for value, piece in zip(values, pieces[1:], strict=True):
            spans.append([len(text), len(text) + len(value)])
            text += value + piece
        label = "pos" if spans else "neg"
        n = sum(1 for r in self.records if r["kind"] == kind and bool(r["spans"]) == bool(spans)) + 1
        self.records.append(
            {"id": f"{kind}-{label}-{n:04d}", "kind": kind, "spans": spans, "text": text, "source": source}
        )

    def negative(self, kind: str, text: str, source: str) -> None:
        assert SLOT not in text
        self.add(kind, text, (), source)


# ----------------------------------------------------------------------------- shared material

FIRST = (
    "James Mary Robert Patricia John Jennifer Michael Linda David Elizabeth William Barbara Richard Susan "
    "Joseph Jessica Thomas Sarah Priya Arjun Wei Mei Hiroshi Yuki Olga Ivan Fatima Omar Lucas Sofia Mateo "
    "Chloe Noah Emma Liam Ana Jose Lena Felix Ingrid Lars Aisha Kwame Zoe Raj Anita Sven Marta Pierre Camille"
).split()
LAST = (
    "Smith Johnson Williams Brown Jones Garcia Miller Davis Rodriguez Martinez Hernandez Lopez Wilson Anderson "
    "Thomas Taylor Moore Jackson Martin Lee Thompson White Harris Clark Lewis Walker Young Allen King Wright "
    "Patel Sharma Chen Wang Tanaka Suzuki Ivanova Petrov Mueller Schmidt Dubois Rossi Silva Santos Okafor "
    "Nguyen Kim Park Jensen Novak O'Brien"
).split()
CITIES = (
    "London Berlin Paris Madrid Toronto Sydney Mumbai Tokyo Chicago Boston Dublin Auckland Cape Town "
    "Singapore Austin Denver Lyon Munich Osaka Seoul Nairobi Lagos"
).split(" ")
COMPANIES = (
    "acme globex initech umbrella hooli stark wayne cyberdyne soylent tyrell wonka vandelay "
    "northwind contoso fabrikam tailspin adventureworks litware proseware wingtip"
).split()
TLDS = (
    "com org net io co.uk de fr com.au ca in co nz ie ch nl se es it jp dev app ai tech edu gov.uk "
    "info biz us eu org.uk co.za com.br"
).split()


def stdlib_files() -> list[Path]:
    """The standard library's modules, tests excluded (they are full of deliberate fixtures)."""
    skip = {"test", "idlelib", "site-packages", "tkinter", "turtledemo", "lib2to3", "unittest"}
    return sorted(p for p in STDLIB.rglob("*.py") if not skip & set(p.relative_to(STDLIB).parts))


def git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(REPO), *args], check=True, capture_output=True, text=True).stdout


def run(*args: str) -> str:
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout


def fence(code: str, lang: str = "") -> str:
    """Code as the clean stage writes it: Markdown fences, indentation kept."""
    return f"```{lang}\n{code}\n```"


def uuid4(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def isbn13(rng: random.Random) -> str:
    body = "978" + "".join(rng.choice("0123456789") for _ in range(9))
    check = (10 - sum(int(d) * (1 if i % 2 == 0 else 3) for i, d in enumerate(body)) % 10) % 10
    digits = body + str(check)
    return f"{digits[:3]}-{digits[3]}-{digits[4:7]}-{digits[7:12]}-{digits[12]}"


def isbn10(rng: random.Random) -> str:
    body = "".join(rng.choice("0123456789") for _ in range(9))
    check = (11 - sum((10 - i) * int(d) for i, d in enumerate(body)) % 11) % 11
    digits = body + ("X" if check == 10 else str(check))
    return f"{digits[0]}-{digits[1:4]}-{digits[4:9]}-{digits[9]}"


def pick(rng: random.Random, items, k: int) -> list:
    items = list(items)
    return rng.sample(items, min(k, len(items)))


# ----------------------------------------------------------------------------- phone

PHONE_TYPES = (
    PhoneNumberType.MOBILE,
    PhoneNumberType.FIXED_LINE,
    PhoneNumberType.TOLL_FREE,
    PhoneNumberType.VOIP,
    PhoneNumberType.PERSONAL_NUMBER,
    PhoneNumberType.UAN,
    PhoneNumberType.PAGER,
    PhoneNumberType.SHARED_COST,
    PhoneNumberType.PREMIUM_RATE,
)
# Where the national-format numbers of an English-language web corpus come from (rough weights);
# a tenth come from any other region (see the module docstring).
NATIONAL_REGIONS = {"US": 35, "GB": 15, "IN": 10, "CA": 6, "AU": 6, "DE": 5, "FR": 4, "IE": 3, "NZ": 3, "ZA": 3}
PHONE_TEMPLATES = [
    "Call us at «» (Mon–Fri, 9am–5pm).",
    "Phone: «»",
    "For reservations, please dial «» at least 48 hours in advance.",
    "Tel. «» · Fax «»",
    "If you have questions about your order, contact {first} on «».",
    "{first} {last}\nSenior Engineer, {company}\nMobile: «»",
    "| {city} office | «» | Mon–Fri |",
    "Our {city} branch can be reached on «» or by visiting us in person.",
    "Customer service: «» (calls cost 7p per minute plus your network's access charge).",
    "Text STOP to «» to unsubscribe.",
    "WhatsApp «» for bookings.",
    "- {city}: «»\n- Head office: «»",
    "Emergency contact ({first} {last}): «»",
    "Please ring «» and ask for {first}.",
    "BEGIN:VCARD\nVERSION:3.0\nFN:{first} {last}\nTEL;TYPE=CELL:«»\nEND:VCARD",
    "I tried calling «» three times yesterday but nobody picked up.",
    "Hotline (24/7): «»",
    "Reach the {company} support desk at «», option 2.",
    "To report an outage in {city}, call «».",
    "Contact\n{first} {last}\n«»",
    "Questions? Call «» or stop by the front desk.",
    "The landlord's number is «» – don't call after 8pm.",
    "Booking line «», open daily from 8:00 to 20:00.",
    "Sales: «»\nSupport: «»",
    "You can also reach me on my cell, «».",
    '```json\n{"name": "{first} {last}", "phone": "«»", "city": "{city}"}\n```',
    "```yaml\ncontact:\n  name: {first} {last}\n  phone: «»\n```",
    "```python\nSUPPORT_PHONE = '«»'  # shown in the footer\n```",
    "```\nname,city,phone\n{first} {last},{city},«»\n```",
]


def phone_numbers(rng: random.Random, region: str) -> phonenumbers.PhoneNumber | None:
    """An example number of `region`, its last digits varied while it stays valid and of its type."""
    types = [t for t in PHONE_TYPES if phonenumbers.example_number_for_type(region, t)]
    if not types:
        return None
    kind = rng.choice(types)
    example = phonenumbers.example_number_for_type(region, kind)
    nsn = phonenumbers.national_significant_number(example)
    for _ in range(30):
        k = min(4, len(nsn) - 3)
        varied = nsn[:-k] + "".join(rng.choice("0123456789") for _ in range(k))
        number = phonenumbers.parse(f"+{example.country_code}{varied}")
        if phonenumbers.is_valid_number_for_region(number, region) and phonenumbers.number_type(number) == kind:
            return number
    return example


def format_phone(rng: random.Random, number: phonenumbers.PhoneNumber, style: str, region: str) -> str:
    if style == "national":
        text = phonenumbers.format_number(number, PhoneNumberFormat.NATIONAL)
        if region in ("US", "CA", "FR") and rng.random() < 0.3:  # 202.555.0143, 06.12.34.56.78
            text = re.sub(r"[ \-]", ".", text.replace("(", "").replace(") ", "."))
        return text
    if style == "e164":
        return phonenumbers.format_number(number, PhoneNumberFormat.E164)
    if style == "rfc3966":
        return phonenumbers.format_number(number, PhoneNumberFormat.RFC3966).removeprefix("tel:")
    text = phonenumbers.format_number(number, PhoneNumberFormat.INTERNATIONAL)
    trunk = phonenumbers.PhoneMetadata.metadata_for_region(region).national_prefix
    r = rng.random()
    if trunk == "0" and region in ("GB", "DE", "AT", "CH", "NL", "IE", "BE") and r < 0.3:
        text = text.replace(" ", " (0)", 1)  # +44 (0)20 7946 0958
    elif r < 0.1:
        text = "00" + text[1:]  # 0044 20 7946 0958: the international prefix of most of the world
    return text


def phone_positives(b: Builder, n: int) -> None:
    rng = b.rng
    regions = sorted(phonenumbers.SUPPORTED_REGIONS)
    national, weights = zip(*NATIONAL_REGIONS.items(), strict=True)
    for i in range(n):
        template = PHONE_TEMPLATES[i % len(PHONE_TEMPLATES)]
        values, notes = [], []
        for _ in range(template.count(SLOT)):
            style = rng.choices(["international", "national", "e164", "rfc3966"], [35, 30, 20, 15])[0]
            if style == "national":
                region = rng.choices(national, weights)[0] if rng.random() < 0.9 else rng.choice(regions)
            else:
                region = rng.choice(regions)
            number = None
            while number is None:
                number = phone_numbers(rng, region)
                region = region if number else rng.choice(regions)
            text = format_phone(rng, number, style, region)
            if style == "rfc3966":
                template = template.replace(SLOT, "tel:\0", 1)  # the scheme stays, the number goes
            else:
                template = template.replace(SLOT, "\0", 1)
            values.append(text)
            notes.append(f"{region} {phonenumbers.number_type(number)} {style}")
        template = template.replace("\0", SLOT)
        template = (
            template.replace("{first}", rng.choice(FIRST))
            .replace("{last}", rng.choice(LAST))
            .replace("{city}", rng.choice(CITIES))
            .replace("{company}", rng.choice(COMPANIES).title())
        )
        b.add("phone", template, values, "phonenumbers example number, varied: " + "; ".join(notes))


def hexdumps() -> list[tuple[str, str]]:
    """Lines of real hex and octal dumps of installed files, with the command that made them."""
    files = [
        Path(sys.executable).resolve(),
        STDLIB / "json" / "__init__.py",
        SITE / "matplotlib" / "mpl-data" / "sample_data" / "membrane.dat",
        SITE / "matplotlib" / "mpl-data" / "sample_data" / "eeg.dat",
    ]
    files += sorted((STDLIB / "__pycache__").glob("*.cpython-311.pyc"))[:6]
    out = []
    for f in files:
        for cmd in (
            ["xxd", "-l", "512"],
            ["od", "-A", "d", "-t", "u2", "-N", "256"],
            ["od", "-t", "x4", "-N", "256"],
            ["hexdump", "-C", "-n", "256"],
            ["od", "-A", "o", "-t", "o2", "-N", "256"],
        ):
            lines = [ln for ln in run(*cmd, str(f)).splitlines() if ln.strip() and ln != "*"]
            out.append((" ".join(cmd), "\n".join(lines)))
    return out


def numeric_tables() -> list[tuple[str, list[str]]]:
    """Rows of real numeric tables shipped with matplotlib and numpy."""
    data = SITE / "matplotlib" / "mpl-data" / "sample_data"
    tables = [data / "msft.csv", data / "Stocks.csv", data / "data_x_x2_x3.csv"]
    tables += sorted((SITE / "numpy" / "random" / "tests" / "data").glob("*.csv"))[:4]
    return [
        (str(t.relative_to(SITE)), [ln for ln in t.read_text().splitlines() if ln and not ln.startswith("#")])
        for t in tables
    ]


def stdlib_lines(pattern: str, exclude: str = r"@|://") -> list[tuple[str, str]]:
    """(file:line, line) of the standard library's source matching `pattern`."""
    found = []
    for path in stdlib_files():
        for i, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if re.search(pattern, line) and not re.search(exclude, line) and len(line) < 160:
                found.append((f"{path.relative_to(STDLIB)}:{i}", line))
    return found


def site_lines(pattern: str, exclude: str) -> list[tuple[str, str]]:
    """(file:line, line) of the installed packages' source (tests aside) matching `pattern` (grep -E)."""
    out = subprocess.run(
        ["grep", "-rnE", "--include=*.py", pattern, "."], cwd=SITE, capture_output=True, text=True
    ).stdout
    found = []
    for hit in sorted(out.splitlines()):
        path, number, line = hit.split(":", 2)
        if (
            not re.search(r"/tests?/|/testing/|_test\.py|test_", path)
            and not re.search(exclude, line)
            and len(line) < 160
        ):
            found.append((f"{path.removeprefix('./')}:{number}", line))
    return found


def commit_dates() -> list[str]:
    return git("log", "--format=%ci|%cd|%aD|%ad", "--date=format:%d/%m/%Y %H:%M", COMMIT).splitlines()


def phone_negatives(b: Builder, rng: random.Random) -> None:
    ri = rng.randint  # short, for the templates below
    for source, dump in hexdumps():
        lines = dump.splitlines()
        start = rng.randrange(max(1, len(lines) - 4))
        b.negative("phone", "\n".join(lines[start : start + ri(2, 4)]), f"real: {source}")
        b.negative("phone", fence("\n".join(lines[:3])), f"real, fenced: {source}")
    for source, rows in numeric_tables():
        for _ in range(9):
            start = rng.randrange(1, len(rows) - 3)
            chunk = rows[start : start + 3]
            style = rng.choice(["csv", "markdown", "aligned"])
            if style == "markdown":
                chunk = ["| " + " | ".join(r.split(",")) + " |" for r in chunk]
            elif style == "aligned":
                chunk = ["  ".join(f"{c:>12}" for c in r.split(",")) for r in chunk]
            b.negative("phone", "\n".join(chunk), f"real: {source} rows {start}-{start + 2} as {style}")
    lines = stdlib_lines(r"\d{3,}\D{1,3}\d{3,}|\d{7,}")
    for source, line in pick(rng, lines, 70):
        b.negative("phone", line if rng.random() < 0.5 else fence(line, "python"), f"real: {source}")
    for row in pick(rng, commit_dates(), 30):
        ci, cd, ad, dmy = row.split("|")
        text = rng.choice(
            [
                f"Released on {ci}.",
                f"Last modified: {dmy}",
                f"Date: {ad}",
                f"{cd} build passed",
                f"Timestamp {ci.replace(' ', 'T', 1)}",
                f"({dmy[:10]})",
                f"updated {dmy[:10].replace('/', '.')}",
            ]
        )
        b.negative("phone", text, f"real: commit date of this repository at {COMMIT[:7]}")
    for _ in range(12):
        b.negative(
            "phone",
            rng.choice(["ISBN @", "ISBN-13: @", "(ISBN @, paperback)"]).replace("@", isbn13(rng)),
            "generated ISBN-13 with a valid check digit",
        )
        b.negative(
            "phone",
            rng.choice(["ISBN @", "ISBN-10 @"]).replace("@", isbn10(rng)),
            "generated ISBN-10 with a valid check digit",
        )
    for _ in range(30):
        big = rng.randrange(1_000_000, 9_999_999_999)
        text = rng.choice(
            [
                f"The population grew to {big:,} by the last census.".replace(",", " "),
                f"Total: {big:,} bytes",
                f"Prix : {big // 100:,},{big % 100:02d} €".replace(",", " ", big // 100 > 999).replace(" ", " "),
                f"Umsatz {big:,} EUR".replace(",", "."),
                f"costs ${big // 1000:,}.{big % 100:02d} per year",
                f"INT_MAX is 2 147 483 647 and the mean was {big:_}",
                "π ≈ 3.14159 26535 89793 23846 26433 83279; e ≈ 2.71828 18284 59045 23536",
                f"Order #{big % 10000:04d}-{big // 10000 % 10000:04d}-{rng.randrange(10000):04d} has shipped.",
                f"Ticket {rng.randrange(2015, 2027)}-{big % 1000000:06d} was closed.",
                f"Invoice no. {rng.randrange(2015, 2027)}/{big % 10000000:07d}",
                f"Serial number: {big % 10000:04d} {rng.randrange(10000):04d} {rng.randrange(10000):04d}",
                f"pp. {big % 900 + 100}–{big % 900 + 130}, vol. {big % 40 + 1}, no. {big % 12 + 1} "
                f"({rng.randrange(1950, 2025)})",
                f"arXiv:{rng.randrange(1501, 2412)}.{big % 100000:05d}v{ri(1, 3)}",
                f"PMID: {big % 40000000}; doi:10.{big % 9000 + 1000}/{big % 1000000}",
                f"Coordinates: {rng.uniform(-80, 80):.6f}, {rng.uniform(-180, 180):.6f}",
                f"{ri(1, 89)}° {ri(0, 59)}′ {ri(0, 59)}″ N, {ri(1, 179)}° {ri(0, 59)}′ W",
                f"Elapsed: {ri(0, 9)}:{ri(0, 59):02d}:{ri(0, 59):02d}.{big % 1000000:06d}",
                f"epoch {big % 1000000000 + 1600000000}.{big % 1000000:06d}",
                "Fibonacci: 1 1 2 3 5 8 13 21 34 55 89 144 233 377 610 987",
                f"Scores: {ri(0, 5)}-{ri(0, 5)}, {ri(0, 5)}-{ri(0, 5)} (aet {ri(0, 5)}-{ri(0, 5)})",
                f"Open {ri(6, 10)}:00–{ri(12, 13)}:30 and {ri(14, 15)}:00–{ri(17, 19)}:00",
                f"UUID {uuid4(rng)}",
                f"request_id={uuid4(rng)} took {big % 1000} ms",
                f"Listening on ports {big % 9000 + 1000}, {big % 9000 + 1001} and {ri(1024, 65535)}-{ri(1024, 65535)}",
                f"Model no. {rng.choice('ABCDEFGH')}{big % 1000:03d}-{big // 1000 % 10000:04d}-"
                f"{rng.randrange(100):02d}",
                f"{big % 1000:3d} {big // 1000 % 1000:3d} {big // 1000000 % 1000:3d} {rng.randrange(1000):4d}",
            ]
        )
        b.negative("phone", text, "generated: numbers of other kinds")
    for sha in pick(rng, git("log", "--format=%H", COMMIT).split(), 10):
        b.negative(
            "phone",
            rng.choice([f"commit {sha}", f"fixed in {sha[:7]}", f"Merge {sha[:12]}"]),
            f"real: commit id of this repository at {COMMIT[:7]}",
        )


# ----------------------------------------------------------------------------- ip

IP_TEMPLATES = [
    "Your IP address is «».",
    '«» - - [{day}/Oct/2023:13:55:36 +0000] "GET /index.html HTTP/1.1" 200 2326',
    "Failed password for root from «» port {port} ssh2",
    "Connection from «» port {port} on 0.0.0.0 port 22",
    "curl -v http://«»:8080/health",
    "server {\n    listen «»:443 ssl;\n    server_name shop.{company}.com;\n}",
    "nameserver «»",
    "The A record for {company}.com points to «».",
    "Received: from mail.{company}.com (mail.{company}.com [«»])",
    "X-Forwarded-For: «», «»",
    "Blocked «» after 5 failed login attempts.",
    "PING «» («») 56(84) bytes of data.",
    "64 bytes from «»: icmp_seq=1 ttl=57 time=11.2 ms",
    "iptables -A INPUT -s «» -j DROP",
    "Nmap scan report for «»\nHost is up (0.012s latency).",
    "| web-{port} | «» | running |",
    "ssh -i ~/.ssh/id_ed25519 ubuntu@«»",
    "The attack originated from «» and lasted {port} seconds.",
    "proxy_pass http://«»:8000;",
    "Set the DNS server to «» and restart the network service.",
    "inet «»/24 brd 255.255.255.255 scope global eth0",
    "Our mail server moved to «» last week.",
    "{first}'s laptop kept getting «» from the hotel Wi-Fi.",
    "Traffic spiked from a single address, «», at 03:12 UTC.",
    "Known bad addresses: «», «» and «».",
    "GeoIP lookup for «» says {city}.",
    "```python\nHOST = '«»'\nPORT = {port}\n```",
    '```python\nsock.connect(("«»", {port}))\n```',
    "```bash\nssh admin@«» 'sudo systemctl restart nginx'\n```",
    "```yaml\nupstream:\n  host: «»\n  port: {port}\n```",
    "```\n$ dig +short {company}.com\n«»\n```",
    "```nginx\nallow «»;\ndeny all;\n```",
]


def public_ipv4(rng: random.Random) -> str:
    while True:
        address = ipaddress.IPv4Address(rng.getrandbits(32))
        if address.is_global and not address.is_multicast:
            return str(address)


def public_ipv6(rng: random.Random) -> str:
    while True:  # 2000::/3 holds the global unicast addresses
        address = ipaddress.IPv6Address((1 << 125) | rng.getrandbits(125))
        if address.is_global:
            # zero runs as real allocations have them (2606:4700:4700::1111), so :: shows up
            groups = address.exploded.split(":")
            zero_from = rng.randrange(2, 7)
            for g in range(zero_from, min(8, zero_from + rng.randint(0, 4))):
                groups[g] = "0000"
            text = str(ipaddress.IPv6Address(":".join(groups)))
            return text.upper() if rng.random() < 0.1 else text


def ip_positives(b: Builder, n: int) -> None:
    rng = b.rng
    for i in range(n):
        template = IP_TEMPLATES[i % len(IP_TEMPLATES)]
        v6 = rng.random() < 0.2 and "«»:" not in template and "«»/" not in template
        values = [public_ipv6(rng) if v6 else public_ipv4(rng) for _ in range(template.count(SLOT))]
        if template.startswith("PING"):
            values = [values[0], values[0]]
        template = (
            template.replace("{port}", str(rng.randint(1024, 65535)))
            .replace("{day}", f"{rng.randint(1, 28):02d}")
            .replace("{company}", rng.choice(COMPANIES))
            .replace("{first}", rng.choice(FIRST))
            .replace("{city}", rng.choice(CITIES))
        )
        b.add("ip", template, values, "generated public " + ("IPv6" if v6 else "IPv4") + " address")


def ip_negatives(b: Builder, rng: random.Random) -> None:
    dists = sorted({(d.metadata["Name"], d.version) for d in importlib.metadata.distributions()})
    for name, version in pick(rng, dists, 60):
        text = rng.choice(
            [
                f"{name} {version}",
                f"{name}=={version}",
                f"Successfully installed {name}-{version}",
                f"Requires: {name} (>= {version})",
                f"version {version} of {name}",
                f"{name}/{version}",
            ]
        )
        b.negative("ip", text, "real: version of an installed distribution (importlib.metadata)")
    from cryptography.x509 import oid

    oids = sorted(
        {
            v.dotted_string
            for cls in vars(oid).values()
            if isinstance(cls, type)
            for v in vars(cls).values()
            if hasattr(v, "dotted_string")
        }
    )
    names = {
        v.dotted_string: v._name
        for cls in vars(oid).values()
        if isinstance(cls, type)
        for v in vars(cls).values()
        if hasattr(v, "dotted_string")
    }
    for dotted in pick(rng, oids, 60):
        text = rng.choice(
            [
                f"OID {dotted} ({names[dotted]})",
                f"{dotted}  {names[dotted]}",
                f"the extension {dotted} is marked critical",
                f"<ObjectIdentifier(oid={dotted}, name={names[dotted]})>",
            ]
        )
        b.negative("ip", text, "real: OID from cryptography.x509.oid")
    quads = stdlib_lines(
        r"(?<![\d.])\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}(?![\d.])", exclude=r"(?i)@|://|\bip|addr|inet|host|socket"
    )
    for source, line in quads:
        b.negative("ip", line if rng.random() < 0.6 else fence(line), f"real: {source}")
    products = [
        "GCC",
        "Windows NT",
        "Chrome",
        "Firefox",
        "Java",
        "Perl",
        "PHP",
        "Node",
        "MSVC",
        "Delphi",
        "iTunes",
        "Kernel",
        "OpenSSL",
        "Excel",
        "Android",
        "Safari",
        "Flash Player",
        "Acrobat Reader",
    ]
    for _ in range(45):
        version = ".".join(
            str(x) for x in (rng.randint(0, 30), rng.randint(0, 20), rng.randint(0, 60), rng.randint(0, 250))
        )
        text = rng.choice(
            [
                f"{rng.choice(products)} {version}",
                f"version {version}",
                f"v{version}",
                "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
                f"Chrome/{version} Safari/537.36",
                f"Upgrade from {version} to {version[:-1]}9 is recommended.",
                f"Build {version} (x64)",
                f"| {version} | {rng.randint(2001, 2025)}-0{rng.randint(1, 9)}-1{rng.randint(0, 9)} | bug fixes |",
                f"fix-{version}.tar.gz",
                f'__version__ = "{version}"',
                f"Version: {version}",
            ]
        )
        b.negative("ip", text, "generated four-part version number")
    headings = [
        "Scope",
        "Definitions",
        "Handling of timeouts",
        "Error codes",
        "Security considerations",
        "Message format",
        "Retransmission",
        "Examples",
        "Normative references",
        "Encoding rules",
    ]
    for _ in range(40):
        parts = [rng.randint(1, 12), rng.randint(1, 9), rng.randint(1, 9), rng.randint(1, 9)]
        number = ".".join(map(str, parts))
        text = rng.choice(
            [
                f"{number} {rng.choice(headings)}",
                f"see section {number}",
                f"as required by clause {number}",
                f"{number}. {rng.choice(headings)} .......... {rng.randint(10, 300)}",
                f"(§ {number})",
                f"Table {number}: {rng.choice(headings)}",
                f"Step {number}",
            ]
        )
        b.negative("ip", text, "generated section number")
    for _ in range(45):
        private = rng.choice(
            [
                f"192.168.{rng.randint(0, 255)}.{rng.randint(1, 254)}",
                f"10.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}",
                f"172.{rng.randint(16, 31)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}",
                f"{rng.choice(['192.0.2', '198.51.100', '203.0.113'])}.{rng.randint(1, 254)}",
                "127.0.0.1",
                "0.0.0.0",
                "255.255.255.0",
                "224.0.0.251",
                "169.254.169.254",
                "::1",
                "fe80::1ff:fe23:4567:890a",
                f"2001:db8::{rng.randint(1, 0xFFFF):x}",
                "fd12:3456:789a:1::1",
            ]
        )
        text = rng.choice(
            [
                f"The router's admin page is at http://{private}/.",
                f"bind to {private}:8080",
                f'host = "{private}"',
                f"ping {private}",
                f"Your server listens on {private}.",
            ]
        )
        b.negative("ip", text, "generated private, loopback, link-local or documentation address (only_public_ips)")
    for _ in range(40):
        mac = ":".join(f"{rng.randrange(256):02x}" for _ in range(6))
        wwn = ":".join(f"{rng.randrange(256):02x}" for _ in range(8))
        text = rng.choice(
            [
                f"HWaddr {mac.upper()}",
                f"link/ether {mac} brd ff:ff:ff:ff:ff:ff",
                f"WWN {wwn}",
                f"std::vector<int>::iterator it = v.begin(); // {rng.randint(1, 99)}",
                f"x[{rng.randint(1, 9)}::{rng.randint(2, 9)}] and y[::-1]",
                f"at {rng.randint(10, 23)}:{rng.randint(10, 59)}:{rng.randint(10, 59)}",
                f"use std::io::Result; fn main() {{ let v = {rng.randint(2, 99)}::{rng.randint(2, 99)}; }}",
                f"Foo::Bar::baz() at 0x{rng.getrandbits(48):012x}",
                f"duration {rng.randint(1, 9)}:{rng.randint(10, 23)}:{rng.randint(10, 59)}:{rng.randint(10, 59)}",
                f"fingerprint {':'.join(f'{rng.randrange(256):02X}' for _ in range(16))}",
            ]
        )
        b.negative("ip", text, "generated colon-separated hex and times")
    for _ in range(20):
        a, c = rng.uniform(-80, 80), rng.uniform(-170, 170)
        text = rng.choice(
            [
                f"{a:.4f}.{rng.randint(1, 9)}",
                f"1.{rng.randint(2, 9)}.{rng.randint(2, 9)}.{rng.randint(10, 99)}.{rng.randint(1, 9)} build",
                f"Lat/Long {a:.5f}, {c:.5f}",
                f"SNMPv2-MIB::sysUpTime.0 = 1.3.6.1.2.1.1.3.{rng.randint(0, 9)}",
                f"dated {rng.randint(1, 28)}.{rng.randint(1, 12)}.{rng.randint(1990, 2025)}",
            ]
        )
        b.negative("ip", text, "generated dotted numbers")


# ----------------------------------------------------------------------------- email

EMAIL_TEMPLATES = [
    "Write to «» for a copy of the report.",
    "Contact: «»",
    "{first} {last} <«»>",
    "Send your CV to «» before Friday.",
    "Author: {first} {last} <«»>\nDate:   Tue Oct 10 13:55:36 2023 +0200",
    "For press enquiries: «» or «»",
    "mailto:«»?subject=Feedback",
    "Questions about your order? Email «» (we answer within a day).",
    "Reported-by: {first} {last} <«»>",
    'From: "{first} {last}" <«»>\nTo: «»\nSubject: Re: invoice',
    "| {first} {last} | «» | {city} |",
    "You can reach {first} directly at «».",
    "Unsubscribe by writing to «».",
    "Maintainer: «»",
    "CC: «»; «»",
    '```python\nADMINS = [("{first} {last}", "«»")]\n```',
    "```ini\n[user]\n    name = {first} {last}\n    email = «»\n```",
    '```\ngit config --global user.email "«»"\n```',
    '```json\n{"author": "{first} {last}", "email": "«»"}\n```',
    "Invite sent to «» — they should receive it shortly.",
]


def email_address(rng: random.Random) -> str:
    first, last = rng.choice(FIRST).lower(), rng.choice(LAST).lower().replace("'", "")
    local = rng.choice(
        [
            f"{first}.{last}",
            f"{first[0]}{last}",
            f"{first}_{last}",
            f"{first}{rng.randint(1, 99)}",
            f"{first}.{last}+{rng.choice(['news', 'github', 'work', 'spam'])}",
            f"{last}.{first[0]}",
            rng.choice(["info", "support", "sales", "press", "jobs", "hello", "billing", "noreply", "abuse"]),
            f"{first}-{last}",
            f"{first[0]}.{last}{rng.randint(1970, 2005)}",
        ]
    )
    company = rng.choice(COMPANIES)
    domain = rng.choice(
        [
            f"{company}.{rng.choice(TLDS)}",
            f"mail.{company}.{rng.choice(TLDS)}",
            f"{rng.choice(['gmail', 'outlook', 'yahoo', 'proton', 'icloud', 'gmx'])}."
            f"{rng.choice(['com', 'me', 'de', 'co.uk'])}",
            f"{company}-{rng.choice(['labs', 'group', 'tech'])}.{rng.choice(TLDS)}",
            f"cs.{rng.choice(['stanford', 'mit', 'ox', 'cam', 'ethz', 'tum'])}."
            f"{rng.choice(['edu', 'ac.uk', 'ch', 'de'])}",
        ]
    )
    address = f"{local}@{domain}"
    return address.upper() if rng.random() < 0.05 else address


EMAIL_IN_SOURCE = re.compile(r"[\w.+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")


def email_positives(b: Builder, n: int) -> None:
    rng = b.rng
    # real addresses as the standard library's source writes them (authors, examples in docstrings)
    real = stdlib_lines(r"[\w.+-]+@[A-Za-z0-9-]+\.[A-Za-z]", exclude=r"://[^ ]*@|\w@\d")
    for source, line in pick(rng, real, 80):
        spans = [m.span() for m in EMAIL_IN_SOURCE.finditer(line)]
        if not spans or "@" in EMAIL_IN_SOURCE.sub("", line):
            continue  # only lines whose every @ belongs to an address: the labels are then exact
        template, values, last = "", [], 0
        for s, e in spans:
            template += line[last:s] + SLOT
            values.append(line[s:e])
            last = e
        b.add("email", template + line[last:], values, f"real: {source}")
    i = 0
    while sum(1 for r in b.records if r["kind"] == "email" and r["spans"]) < n:
        template = EMAIL_TEMPLATES[i % len(EMAIL_TEMPLATES)]
        i += 1
        values = [email_address(rng) for _ in range(template.count(SLOT))]
        template = (
            template.replace("{first}", rng.choice(FIRST))
            .replace("{last}", rng.choice(LAST))
            .replace("{city}", rng.choice(CITIES))
        )
        b.add("email", template, values, "generated address")


def email_negatives(b: Builder, rng: random.Random) -> None:
    decorators = stdlib_lines(r"^\s*@\w[\w.]*(\(|$)", exclude=r"://")
    for source, line in pick(rng, decorators, 50):
        b.negative("email", fence(line.strip(), "python") if rng.random() < 0.5 else line.strip(), f"real: {source}")
    dists = sorted({(d.metadata["Name"], d.version) for d in importlib.metadata.distributions()})
    for name, version in pick(rng, dists, 40):
        text = rng.choice(
            [
                f"npm install {name.lower()}@{version}",
                f"{name.lower()}@{version}",
                f"brew install {name.lower()}@{version.split('.')[0]}",
                f'pip install "{name} @ git+https://github.com/{name.lower()}/{name.lower()}@v{version}"',
                f"go get golang.org/x/{name.lower()}@v{version}",
                f'"@{name.lower()}/core": "^{version}"',
            ]
        )
        b.negative("email", text, "real: name and version of an installed distribution")
    images = ["logo", "icon", "hero", "avatar", "banner", "sprite", "button", "arrow", "bg", "favicon"]
    for _ in range(45):
        img = f"{rng.choice(images)}{rng.choice(['', '-dark', '_small', '-2'])}"
        text = rng.choice(
            [
                f"Use {img}@2x.png on retina screens.",
                f"![{img}]({img}@3x.webp)",
                f'src="/static/{img}@2x.jpg"',
                f"background: url(img/{img}@2x.png) no-repeat;",
                f"assets/{img}@1.5x.svg",
                f"{img}@2x.gif, {img}@3x.gif",
            ]
        )
        b.negative("email", text, "generated high-density image file name")
    company = COMPANIES
    for _ in range(60):
        c, user = rng.choice(company), rng.choice(FIRST).lower()
        text = rng.choice(
            [
                f"git clone git@github.com:{c}/{c}-cli.git",
                f"git remote add origin git@gitlab.com:{user}/{c}.git",
                f"git@bitbucket.org:{c}/infra.git",
                f"{user}@{c}-dev:~/src$ make test",
                f"ssh {user}@localhost",
                f"Follow @{user} on Twitter",
                f"@media (max-width: {rng.randint(400, 1200)}px) {{ .nav {{ display: none; }} }}",
                '@import url("theme.css");',
                "y = X@W.T + b",
                "scores = q@k.transpose(-2, -1) / math.sqrt(d)",
                "out = (A @ B).sum()",
                f"HEAD@{{{rng.randint(1, 9)}}} and stash@{{0}}",
                "SELECT @@version;",
                f"docker pull python@sha256:{hashlib.sha256(c.encode()).hexdigest()}",
                f"@{user}/{c}-utils",
                f" * @param {user} the {c} to use",
                f"my @ISA = ('{c.title()}');",
                "@Override public String toString()",
                f"{user}@{c}",
                f"https://medium.com/@{user}/{c}-in-production-{rng.randint(100, 999)}",
                f"@mixin {c}-theme($color) {{ color: $color; }}",
                f"user@host:{rng.randint(1000, 9999)}",
                f"{c}@{rng.randint(1, 9)}.{rng.randint(0, 20)}.{rng.randint(0, 9)}",
            ]
        )
        b.negative("email", text, "generated: @ in code, handles, package specs and remotes")
    for source, line in pick(rng, stdlib_lines(r"\S@\S", exclude=r"[\w.+-]+@[A-Za-z0-9-]+\.[A-Za-z]"), 60):
        b.negative("email", line, f"real: {source}")


# ----------------------------------------------------------------------------- secret

ALNUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


def token(rng: random.Random, n: int, alphabet: str = ALNUM) -> str:
    """Random characters of `alphabet`, with a letter and a digit where the alphabet has both."""
    while True:
        s = "".join(rng.choice(alphabet) for _ in range(n))
        if all(any(pred(c) for c in s) for pred in (str.isdigit, str.isalpha) if any(map(pred, alphabet))):
            return s


def provider_token(rng: random.Random) -> tuple[str, str]:
    upper = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    b64 = ALNUM + "-_"
    return rng.choice(
        [
            ("AKIA" + token(rng, 16, upper), "AWS access key id"),
            ("ghp_" + token(rng, 36), "GitHub token"),
            ("gho_" + token(rng, 36), "GitHub OAuth token"),
            ("github_pat_" + token(rng, 22) + "_" + token(rng, 59), "GitHub fine-grained token"),
            ("glpat-" + token(rng, 20, b64), "GitLab token"),
            (
                "xoxb-" + "-".join(token(rng, k, "0123456789") for k in (12, 13)) + "-" + token(rng, 24),
                "Slack bot token",
            ),
            ("AIza" + token(rng, 35, b64), "Google API key"),
            ("sk_live_" + token(rng, 24), "Stripe secret key"),
            ("sk-proj-" + token(rng, 48, b64), "OpenAI key"),
            ("sk-ant-api03-" + token(rng, 80, b64), "Anthropic key"),
            ("hf_" + token(rng, 34), "Hugging Face token"),
            ("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJ" + token(rng, 40, b64) + "." + token(rng, 43, b64), "JWT"),
        ]
    )


SECRET_NAMES = [
    "DB_PASSWORD",
    "POSTGRES_PASSWORD",
    "MYSQL_ROOT_PASSWORD",
    "AWS_SECRET_ACCESS_KEY",
    "api_key",
    "apiKey",
    "STRIPE_SECRET",
    "client_secret",
    "SECRET_KEY",
    "auth_token",
    "GITHUB_TOKEN",
    "REDIS_PASSWORD",
    "password",
    "Password",
    "SMTP_PASSWORD",
    "access_key",
    "private_key",
    "x-api-key",
    "refresh_token",
    "SENTRY_AUTH_TOKEN",
    "dbPassword",
    "slack_bot_token",
    "secret_key_base",
    "ENCRYPTION_SECRET",
]


def secret_value(rng: random.Random) -> str:
    return rng.choice(
        [
            token(rng, rng.randint(12, 40)),
            token(rng, 32, "0123456789abcdef"),
            token(rng, 40, ALNUM + "/+"),
            rng.choice(["Tr0ub4dor&3", "hunter2hunter2", "Summer2024!", "P@ssw0rd123", "correct-horse-9-battery"]),
            token(rng, 8, ALNUM) + rng.choice("!#$%&*") + token(rng, 4, ALNUM),
        ]
    )


def secret_positives(b: Builder, n: int) -> None:
    rng = b.rng
    for i in range(n):
        style = i % 4
        if style == 0:  # a provider's token, wherever it appears
            value, what = provider_token(rng)
            template = rng.choice(
                [
                    "export GITHUB_TOKEN=«»",
                    "Authorization: Bearer «»",
                    'curl -H "Authorization: token «»" https://api.github.com/user',
                    "I accidentally committed «» to the repo, revoke it!",
                    '```python\nclient = Client(api_key="«»")\n```',
                    "```bash\naws configure set aws_access_key_id «»\n```",
                    "key: «»",
                    "Use the token «» for the staging bot.",
                    "```yaml\nenv:\n  HF_TOKEN: «»\n```",
                    "| prod | «» | rotated 2024-03-01 |",
                ]
            )
        elif style == 1:  # a value assigned to a name that says it is secret
            name, value, what = rng.choice(SECRET_NAMES), secret_value(rng), "secret-named variable"
            template = rng.choice(
                [
                    f"{name}=«»",
                    f"export {name}=«»",
                    f"{name}: «»",
                    f"'{name}': '«»'",
                    f'"{name}": "«»"',
                    f"```bash\nexport {name}=«»\n```",
                    f"```yaml\nservices:\n  db:\n    environment:\n      {name}: «»\n```",
                    f"```python\nsettings = {{'{name}': '«»', 'DEBUG': False}}\n```",
                    f"docker run -e {name}=«» postgres:16",
                    f"```ini\n[database]\nhost = db.internal\n{name} = «»\n```",
                    f'{name} = "«»"',
                    f"environ({{'PATH': '/usr/bin', '{name}': '«»'}})",
                ]
            )
        elif style == 2:  # the password of a URL
            value, what = secret_value(rng).replace("@", "").replace("/", "").replace(":", ""), "password in a URL"
            user, host = (
                rng.choice(FIRST).lower(),
                f"db.{rng.choice(COMPANIES)}.{rng.choice(['com', 'io', 'internal'])}",
            )
            scheme = rng.choice(["postgresql", "mysql", "mongodb+srv", "redis", "amqp", "https", "ftp", "smtp"])
            template = rng.choice(
                [
                    f"DATABASE_URL={scheme}://{user}:«»@{host}:5432/app",
                    f"Connect with {scheme}://{user}:«»@{host}/",
                    f'```python\nengine = create_engine("{scheme}://{user}:«»@{host}/prod")\n```',
                    f"url: {scheme}://{user}:«»@{host}:6379/0",
                ]
            )
        else:  # a private key block
            kind = rng.choice(["RSA ", "EC ", "OPENSSH ", "", "DSA ", "ENCRYPTED "])
            body = "\n".join(token(rng, 64, ALNUM + "+/") for _ in range(rng.randint(3, 8)))
            value, what = (
                f"-----BEGIN {kind}PRIVATE KEY-----\n{body}\n-----END {kind}PRIVATE KEY-----",
                "PEM private key",
            )
            template = rng.choice(
                ["Here is the key:\n«»\nKeep it safe.", "```\n«»\n```", "cat ~/.ssh/id_rsa\n«»", "private_key: |\n«»"]
            )
        b.add("secret", template, [value], f"generated {what}")


def secret_negatives(b: Builder, rng: random.Random) -> None:
    shas = git("log", "--format=%H", COMMIT).split()
    blobs = [ln.split()[2] for ln in git("ls-tree", "-r", COMMIT).splitlines()]
    for sha in pick(rng, shas + blobs, 70):
        text = rng.choice(
            [
                f"commit {sha}",
                f"Fixed in {sha[:7]}.",
                f"index {sha[:7]}..{rng.choice(blobs)[:7]} 100644",
                f"git checkout {sha[:12]}",
                f"| {sha[:10]} | merged |",
                f"revision: {sha}",
            ]
        )
        b.negative("secret", text, f"real: commit or blob id of this repository at {COMMIT[:7]}")
    for path in pick(rng, stdlib_files(), 50):
        data = path.read_bytes()
        text = rng.choice(
            [
                f"sha256: {hashlib.sha256(data).hexdigest()}",
                f"MD5 ({path.name}) = {hashlib.md5(data).hexdigest()}",
                f"{hashlib.sha1(data).hexdigest()}  {path.name}",
                f"--hash=sha256:{hashlib.sha256(data).hexdigest()}",
                f'etag: "{hashlib.md5(data).hexdigest()}"',
                f"digest: sha256:{hashlib.sha256(data).hexdigest()}",
            ]
        )
        b.negative("secret", text, f"real: hash of {path.relative_to(STDLIB)}")
    words = r"(?i)password|passwd|secret|token|api_?key|access_?key|private_?key|credential"
    for source, line in pick(rng, stdlib_lines(words, exclude=r"://[^ ]*:[^ ]*@"), 90):
        b.negative("secret", line if rng.random() < 0.5 else fence(line, "python"), f"real: {source}")
    for _ in range(50):
        text = rng.choice(
            [
                f"request_id: {uuid4(rng)}",
                f"max_tokens={rng.randint(16, 8192)}, num_tokens={rng.randint(10**6, 10**9)}",
                f'tokenizer_name = "gpt2-{rng.choice(["medium", "large", "xl"])}"',
                "token_type_ids = [0, 0, 1, 1]",
                f"password_reset_url = /accounts/reset/{rng.randint(1, 9)}/",
                f"secret_santa_{rng.randint(2019, 2025)} = True",
                'api_key = os.environ["API_KEY"]',
                "password=None",
                "SECRET_KEY = env('DJANGO_SECRET_KEY')",
                "token: ${{ secrets.GITHUB_TOKEN }}",
                "Authorization: Bearer $TOKEN",
                "api_key: YOUR_API_KEY",
                "Tokens start with ghp_ (personal) or gho_ (OAuth); keys with AKIA.",
                "sk-... is the prefix of OpenAI keys",
                f"token_count: {rng.randint(10**5, 10**8)}",
                f"The password must have at least {rng.randint(8, 16)} characters.",
                "credentials_file: ~/.aws/credentials",
                f"tokens_per_second={rng.uniform(10, 900):.1f}",
                'tokenizer = AutoTokenizer.from_pretrained("bert-base-uncased")',
                f"secret_version: projects/{rng.randint(10**5, 10**6)}/secrets/db/versions/{rng.randint(1, 9)}",
                f"password_min_length: {rng.randint(8, 20)}",
                f"token_endpoint: https://oauth2.{rng.choice(COMPANIES)}.com/token",
                f'x = base64.b64decode("{hashlib.sha1(str(rng.random()).encode()).hexdigest()[:20]}")',
                f"pk = {rng.randint(10**6, 10**9)}",
                'private_key_path = "keys/id_ed25519"',
                "access_key_id_length = 20",
            ]
        )
        b.negative("secret", text, "generated: code and prose about secrets, ids, hashes")


# ----------------------------------------------------------------------------- batch B
# Written after the scrubber had been tuned on the set above, without looking at its results on
# these: how it does on contexts and formats it was not tuned for (bench/pii_precision.py prints
# this batch apart).


def phone_batch_b(b: Builder, rng: random.Random, n: int) -> None:
    ri = rng.randint  # short, for the templates below
    templates = [
        "Ph: «»",
        "T: «» | M: «»",
        "☎ «»",
        "Call «» (toll-free) to cancel.",
        "Office «» ext. 214",
        "Dial «», then press 3 for billing.",
        "Our number changed to «» on 1 March.",
        "{first} ({city}) – «»",
        "Tel «» / Fax «»",
        "reach us on «» or visit the shop",
        "Enquiries «»",
        "Phone number: «»",
        "<p>Call «» today</p>",
        "For urgent matters: «».",
    ]
    regions = sorted(phonenumbers.SUPPORTED_REGIONS)
    national, weights = zip(*NATIONAL_REGIONS.items(), strict=True)
    for i in range(n):
        template, values, notes = templates[i % len(templates)], [], []
        for _ in range(template.count(SLOT)):
            style = rng.choice(["paren_cc", "intl_dots", "intl_space_trunk", "national", "international"])
            region = rng.choices(national, weights)[0] if style == "national" else rng.choice(regions)
            number = phone_numbers(rng, region) or phonenumbers.example_number(region)
            if number is None:
                region, number = "GB", phone_numbers(rng, "GB")
            intl = phonenumbers.format_number(number, PhoneNumberFormat.INTERNATIONAL)
            if style == "paren_cc":  # (+44) 20 7946 0958
                cc, rest = intl.split(" ", 1)
                text = f"({cc}) {rest}"
            elif style == "intl_dots":  # +1.202.555.0143
                text = re.sub(r"[ \-]", ".", intl)
            elif (
                style == "intl_space_trunk"
                and phonenumbers.PhoneMetadata.metadata_for_region(region).national_prefix == "0"
            ):
                text = intl.replace(" ", " (0) ", 1)  # +49 (0) 30 1234567
            elif style == "national":
                text = phonenumbers.format_number(number, PhoneNumberFormat.NATIONAL)
            else:
                text = intl
            values.append(text)
            notes.append(f"{region} {style}")
        template = template.replace("{first}", rng.choice(FIRST)).replace("{city}", rng.choice(CITIES))
        b.add("phone", template, values, "batch B: phonenumbers example number, varied: " + "; ".join(notes))
    for _ in range(n // 2):
        text = rng.choice(
            [
                f"Arsenal  38  {ri(20, 28)}  {ri(4, 9)}  {ri(3, 8)}  {ri(70, 90)}  {ri(25, 45)}  "
                f"+{ri(20, 50)}  {ri(70, 90)}",
                f"Sort code {ri(10, 99)}-{ri(10, 99)}-{ri(10, 99)}, account {ri(10**7, 10**8 - 1)}",
                f"ZIP {ri(10000, 99999)}-{ri(1000, 9999)}",
                f"Winning numbers: {' '.join(f'{x:02d}' for x in sorted(rng.sample(range(1, 50), 6)))}",
                f"See pages {ri(100, 900)}-{ri(901, 999)} and figure {ri(1, 9)}.{ri(1, 9)}",
                f"Room {ri(100, 1500)}, Building {ri(1, 9)}, {ri(10, 99)} {rng.choice(LAST)} Street",
                f"Flight BA {ri(100, 999):04d} departs at {ri(6, 22)}:{rng.choice(['05', '15', '45'])}",
                f"VAT no. GB {ri(100, 999)} {ri(1000, 9999)} {ri(10, 99)}",
                f"Case {ri(1, 4)}:{ri(10, 24)}-cv-{ri(10000, 99999)}",
                f"Part no. {ri(1000, 9999)}-{ri(100, 999)}-{ri(10, 99)}",
                f"matrix([[{ri(100, 999)} {ri(100, 999)} {ri(1000, 9999)}]])",
                f"{ri(1, 12)}/{ri(1, 28)}/{ri(10, 99)} {ri(1, 12)}:{ri(10, 59)} PM",
                f"Population {ri(1, 9)} {ri(100, 999)} {ri(100, 999)} (est.)",
                f"Latency p50 {ri(10, 99)} ms, p99 {ri(100, 999)} ms over {ri(1000, 9999)} {ri(100, 999)} requests",
                f"Seats: row {ri(1, 30)}, {ri(1, 9)} {ri(10, 20)} {ri(21, 30)} {ri(31, 40)}",
                f"Tracking number {ri(1000, 9999)} {ri(1000, 9999)} {ri(1000, 9999)}",
            ]
        )
        b.negative("phone", text, "batch B: generated numbers of other kinds")


# Read by hand: lines of installed packages whose dotted quad is a public address (an example one
# or a default), not a look-alike; they are no negatives.
ADDRESS_LINES = {
    "distributed/comm/addressing.py:122",
    "distributed/comm/addressing.py:145",
    "distributed/utils.py:888",
    "docker/types/networks.py:113",
    "docker/types/networks.py:115",
    "httpx/_transports/asgi.py:71",
    "httpx2/_transports/asgi.py:68",
    "ray/experimental/sandbox/config.py:13",
    "opentelemetry/semconv/_incubating/attributes/rpc_attributes.py:116",
    "opentelemetry/semconv/_incubating/attributes/rpc_attributes.py:117",
    "opentelemetry/semconv/attributes/http_attributes.py:25",
}


def ip_batch_b(b: Builder, rng: random.Random, n: int) -> None:
    templates = [
        "Our office network uses «» as its public address.",
        "Tor exit node «» was seen scanning port 22.",
        "Hetzner assigned us «» and «».",
        "Geolocation: «» → {city}",
        "Spamhaus lists «» as a botnet controller.",
        "Cloudflare «» answered in 11 ms.",
        "I pinged «» and got 12 ms.",
        "| «» | eu-west-1 | healthy |",
        '{"remote_addr": "«»", "status": 200, "bytes": 5120}',
        "Accepted publickey for deploy from «» port 51122 ssh2",
        "whitelist «»/32 in the security group",
        "Mail from «» passed SPF.",
        "Visitors from «» (Googlebot) crawl the site daily.",
        "The site resolves to «» now that the migration is done.",
        "Location: «»",
        "We saw 4,000 requests per second from «» alone.",
        '```\n«» - - [12/Mar/2024:08:12:01 +0000] "POST /login HTTP/1.1" 401 512\n```',
        "```text\n«»    {company}.internal {company}\n```",
        "```\n$ traceroute {company}.com\n 1  «»  1.123 ms\n```",
        "Try again from a different IP than «».",
        "Abuse reports for «» go to the ISP.",
        "A customer at «» reported the issue.",
    ]
    for i in range(n):
        template = templates[i % len(templates)]
        v6 = rng.random() < 0.15 and "«»/" not in template
        values = [public_ipv6(rng) if v6 else public_ipv4(rng) for _ in range(template.count(SLOT))]
        template = template.replace("{city}", rng.choice(CITIES)).replace("{company}", rng.choice(COMPANIES))
        b.add("ip", template, values, "batch B: generated public " + ("IPv6" if v6 else "IPv4") + " address")
    quads = site_lines(
        r"(^|[^0-9.])[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}([^0-9.]|$)",
        exclude=r"(?i)ip|addr|host|inet|net|socket|@|://|localhost|cidr|bind|server|proxy|forward|e\.g|node:|\d:\d",
    )
    for source, line in pick(rng, [q for q in quads if q[0] not in ADDRESS_LINES], 60):
        b.negative("ip", line.strip(), f"batch B, real: {source}")
    for _ in range(n // 3):
        v = f"{rng.randint(1, 40)}.{rng.randint(0, 30)}.{rng.randint(0, 9)}.{rng.randint(0, 200)}"
        text = rng.choice(
            [
                f"Released as {v} in {rng.randint(1995, 2024)}.",
                f"ICU {v}",
                f"sqlite3 {v}",
                f"The {v} release fixes a crash.",
                f"tags: {v}",
                f"Errata for {v}",
                f"build-tools {v}",
                f'[assembly: AssemblyVersion("{v}")]',
                f"Figures {v} and {v[:-1]}9",
                f"NuGet package Foo.Bar {v}",
                f"driver {v} (WHQL)",
                f"firmware_{v}.bin",
            ]
        )
        b.negative("ip", text, "batch B: generated four-part version number")


def email_batch_b(b: Builder, rng: random.Random) -> None:
    for source, line in pick(rng, site_lines(r"\S@\S", exclude=r"[\w.+-]+@[A-Za-z0-9-]+\.[A-Za-z]|://"), 60):
        b.negative("email", line.strip(), f"batch B, real: {source}")
    for source, line in pick(rng, site_lines(r"^\s*@[A-Za-z_][\w.]*(\(|$)", exclude=r"://"), 30):
        b.negative("email", line.strip(), f"batch B, real: {source}")


def secret_batch_b(b: Builder, rng: random.Random) -> None:
    words = r"(password|passwd|secret|token|api_?key|access_?key|private_?key|credential)"
    for source, line in pick(rng, site_lines(words, exclude=r"://[^ ]*:[^ ]*@"), 80):
        b.negative("secret", line.strip(), f"batch B, real: {source}")


def code_batch_c(b: Builder, rng: random.Random) -> None:
    """Batch C: code look-alikes, fenced, to measure the code policy (written with batch B)."""
    import numpy as np

    for source, line in pick(rng, stdlib_lines(r"\d+[ .\-/]\d+[ .\-/]\d+"), 60):
        b.negative("phone", fence(line, "python"), f"batch C, real: {source}")
    for source, line in pick(
        rng, site_lines(r"[0-9]+[ .-][0-9]+[ .-][0-9]+[ .-][0-9]+", exclude=r"(?i)phone|tel|fax|@|://"), 60
    ):
        b.negative("phone", fence(line.strip()), f"batch C, real: {source}")
    gen = np.random.default_rng(SEED)
    for _ in range(20):
        low, high = rng.choice([(100, 1000), (1000, 10000), (10, 100)])
        array = gen.integers(low, high, size=(rng.randint(2, 4), rng.randint(3, 5)))
        b.negative(
            "phone", fence(f">>> a\n{array!r}\n>>> print(a)\n{array}", "python"), "batch C, real: numpy printout"
        )


def main() -> None:
    b = Builder()
    phone_positives(b, 360)
    phone_negatives(b, random.Random(SEED + 1))
    ip_positives(b, 340)
    ip_negatives(b, random.Random(SEED + 2))
    email_positives(b, 340)
    email_negatives(b, random.Random(SEED + 3))
    secret_positives(b, 340)
    secret_negatives(b, random.Random(SEED + 4))
    phone_batch_b(b, random.Random(SEED + 5), 100)
    ip_batch_b(b, random.Random(SEED + 6), 110)
    email_batch_b(b, random.Random(SEED + 7))
    secret_batch_b(b, random.Random(SEED + 8))
    code_batch_c(b, random.Random(SEED + 9))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    with OUT.open("w", encoding="utf-8") as f:
        for record in b.records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    for kind in ("phone", "ip", "email", "secret"):
        pos = sum(1 for r in b.records if r["kind"] == kind and r["spans"])
        neg = sum(1 for r in b.records if r["kind"] == kind and not r["spans"])
        print(f"{kind:7s} {pos:4d} positives  {neg:4d} negatives")
    print(f"wrote {len(b.records)} records to {OUT.relative_to(REPO)}")


if __name__ == "__main__":
    main()
