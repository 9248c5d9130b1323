"""URLs: one canonical spelling per page, the crawl's scope, and which addresses may be fetched.

Normalisation makes two spellings of one page one string, so the crawler's seen set holds each
page once: scheme and host lowercased, the default port and the fragment dropped, dot segments
resolved, percent-escapes spelled one way (unreserved characters decoded, hex in upper case,
anything outside RFC 3986 encoded as UTF-8), an empty path made `/` and an empty query dropped.
It does not reorder query parameters or drop `www.`: those change meaning on some sites.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
import string
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit, urlunsplit

from lm_core.crawl import reasons

DEFAULT_PORTS = {"http": 80, "https": 443}
_UNRESERVED = frozenset(string.ascii_letters + string.digits + "-._~")
_PATH_SAFE = _UNRESERVED | frozenset("!$&'()*+,;=:@/")
_QUERY_SAFE = _PATH_SAFE | frozenset("?")
_HEX = frozenset(string.hexdigits)
_HOST_NAME = re.compile(r"^[a-z0-9_](?:[a-z0-9_.-]*[a-z0-9_])?\.?$")  # after IDNA; `_` is common in the wild


class BadURL(ValueError):
    """A URL that cannot be parsed or normalised."""


class UnsupportedScheme(BadURL):
    """Not http(s): mailto:, javascript:, ftp:, data: ... Links like these are skipped, not failures."""


def normalize_url(url: str, base: str | None = None) -> str:
    """The canonical form of `url` (resolved against `base` if relative); raises `BadURL`."""
    url = re.sub(r"[\t\n\r]", "", url).strip()  # as browsers do with hrefs split over lines
    if base is not None:
        try:
            url = urljoin(base, url)
        except ValueError as e:
            raise BadURL(f"{url!r}: {e}") from None
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:  # bad IPv6 brackets, a non-numeric or out-of-range port
        raise BadURL(f"{url!r}: {e}") from None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise UnsupportedScheme(f"{url!r}: scheme {scheme or '(none)'!r} is not http or https")
    host = _normalize_host(parts.hostname or "", url)
    netloc = f"[{host}]" if ":" in host else host
    if parts.username is not None:  # keep credentials as given; they are rare and meaningful
        userinfo = parts.username + (f":{parts.password}" if parts.password is not None else "")
        netloc = f"{userinfo}@{netloc}"
    if port is not None and port != DEFAULT_PORTS[scheme]:
        netloc = f"{netloc}:{port}"
    path = remove_dot_segments(_normalize_percent(parts.path, _PATH_SAFE)) or "/"
    query = _normalize_percent(parts.query, _QUERY_SAFE)
    return urlunsplit((scheme, netloc, path, query, ""))


def _normalize_host(host: str, url: str) -> str:
    if not host:
        raise BadURL(f"{url!r}: no host")
    try:
        return ipaddress.ip_address(host).compressed  # one spelling of an IPv6 literal
    except ValueError:
        pass
    if not host.isascii():
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError as e:
            raise BadURL(f"{url!r}: host {host!r} is not a valid international name: {e}") from None
    host = host.lower()
    if not _HOST_NAME.match(host):
        raise BadURL(f"{url!r}: {host!r} is not a valid host name")
    return host


def _normalize_percent(text: str, safe: frozenset[str]) -> str:
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        escape = text[i + 1 : i + 3]
        if c == "%" and len(escape) == 2 and set(escape) <= _HEX:
            decoded = chr(int(escape, 16))
            out.append(decoded if decoded in _UNRESERVED else "%" + escape.upper())
            i += 3
            continue
        if c in safe:
            out.append(c)
        else:  # includes a lone '%', which becomes %25
            out.append("".join(f"%{b:02X}" for b in c.encode("utf-8", "surrogatepass")))
        i += 1
    return "".join(out)


def remove_dot_segments(path: str) -> str:
    """RFC 3986 section 5.2.4: `/a/b/../c/./d` -> `/a/c/d`."""
    if "." not in path:
        return path
    out: list[str] = []
    segments = path.split("/")
    for i, seg in enumerate(segments):
        last = i == len(segments) - 1
        if seg == "..":
            if len(out) > 1:
                out.pop()
            if last:
                out.append("")
        elif seg == ".":
            if last:
                out.append("")
        else:
            out.append(seg)
    result = "/".join(out)
    if path.startswith("/") and not result.startswith("/"):
        result = "/" + result
    return result


def origin(url: str) -> str:
    """`scheme://host[:port]` of a normalised URL: the unit of robots.txt and of politeness."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"


def host_of(url: str) -> str:
    return urlsplit(url).hostname or ""


# ----------------------------------------------------------------------------- scope


@dataclass(frozen=True)
class Scope:
    """Which URLs the crawl may follow.

    `hosts`: host names links may lead to (any port); an entry `*.example.com` also allows
    every subdomain of example.com. `prefixes`: if any, a URL must start with one of them.
    `exclude`: regular expressions searched in the normalised URL.
    """

    hosts: frozenset[str]
    prefixes: tuple[str, ...] = ()
    exclude: tuple[re.Pattern[str], ...] = ()

    @classmethod
    def build(
        cls,
        seeds: Iterable[str],
        allow_hosts: Iterable[str] = (),
        allow_prefixes: Iterable[str] = (),
        exclude: Iterable[str] = (),
    ) -> Scope:
        hosts = {h.strip().lower() for h in allow_hosts if h.strip()}
        if not hosts:  # default: stay on the seeds' hosts
            for seed in seeds:
                try:
                    hosts.add(host_of(normalize_url(seed)))
                except BadURL:
                    pass
        prefixes = []
        for p in allow_prefixes:
            try:
                prefixes.append(normalize_url(p))
            except BadURL:
                prefixes.append(p)
        return cls(frozenset(hosts), tuple(prefixes), tuple(re.compile(x) for x in exclude))

    def host_allowed(self, host: str) -> bool:
        if host in self.hosts:
            return True
        return any(h.startswith("*.") and (host == h[2:] or host.endswith(h[1:])) for h in self.hosts)

    def refusal(self, url: str) -> tuple[str, str] | None:
        """(reason, detail) if the normalised `url` is out of scope, else None."""
        host = host_of(url)
        if not self.host_allowed(host):
            return reasons.OFF_SITE, f"host {host!r} is not among the allowed hosts"
        if self.prefixes and not any(url.startswith(p) for p in self.prefixes):
            return reasons.OFF_SITE, "outside the allowed prefixes"
        for pattern in self.exclude:
            if pattern.search(url):
                return reasons.EXCLUDED, f"matches {pattern.pattern!r}"
        return None


# ----------------------------------------------------------------------------- address safety

# The kinds of non-public address, each allowed by a setting of its own: each reaches something
# different, and allowing one must not open the others.
LOOPBACK = "loopback"  # this machine: its own services (lmforge's Prefect and MLflow servers among them)
LINK_LOCAL = "link-local"  # the local link: where clouds serve instance metadata and credentials
PRIVATE = "private"  # other machines of private networks (an intranet), and every other non-public range
SETTINGS = {LOOPBACK: "allow_loopback", LINK_LOCAL: "allow_link_local", PRIVATE: "allow_private"}
_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # an IPv4 address spelled as IPv6 for a NAT64 gateway


def address_kind(address: str) -> str | None:
    """None for a public address; else LOOPBACK, LINK_LOCAL or PRIVATE."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone id
    if isinstance(ip, ipaddress.IPv6Address):  # an IPv4 address in IPv6 clothing is judged as itself
        if ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        elif ip in _NAT64:
            ip = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.is_loopback or ip.is_unspecified:  # a connection to 0.0.0.0 or :: reaches this machine
        return LOOPBACK
    if ip.is_link_local:  # 169.254.0.0/16, fe80::/10
        return LINK_LOCAL
    if ip.is_global and not (ip.is_multicast or ip.is_reserved):
        return None
    return PRIVATE  # RFC 1918, fc00::/7, 100.64.0.0/10, reserved, multicast, ...


def is_public_address(address: str) -> bool:
    """False for private, loopback, link-local, shared, reserved, multicast and unspecified addresses."""
    return address_kind(address) is None


class AddressGuard:
    """Refuses hosts that resolve to non-public addresses, so a crawl seeded with public pages
    cannot be steered (by a link or a redirect) into this machine, a private network, or a cloud's
    metadata service. Loopback, private and link-local addresses are each allowed by a setting
    of their own; `trusted` netlocs (host:port) are fetched anyway (the pydoc demo's server).

    Each host is resolved once per crawl. Every address it resolves to must be public or allowed.
    The connection itself resolves the name again, so a DNS server that answers differently the
    second time (DNS rebinding) is not stopped here; pinning the address would need a custom
    transport.
    """

    def __init__(
        self,
        *,
        allow_loopback: bool = False,
        allow_private: bool = False,
        allow_link_local: bool = False,
        trusted: Iterable[str] = (),
    ):
        self.allowed = {LOOPBACK: allow_loopback, PRIVATE: allow_private, LINK_LOCAL: allow_link_local}
        self.trusted = frozenset(trusted)
        self._verdicts: dict[str, tuple[str, str] | None] = {}

    async def refusal(self, url: str) -> tuple[str, str] | None:
        """(reason, detail) if `url` must not be fetched, else None."""
        parts = urlsplit(url)
        if parts.netloc in self.trusted:
            return None
        host = parts.hostname or ""
        if host not in self._verdicts:
            self._verdicts[host] = await self._judge(host, parts.port or DEFAULT_PORTS.get(parts.scheme, 80))
        return self._verdicts[host]

    async def _judge(self, host: str, port: int) -> tuple[str, str] | None:
        try:
            addresses, named = [ipaddress.ip_address(host).compressed], False
        except ValueError:
            named = True
            if host == "invalid" or host.endswith(".invalid"):  # RFC 6761: never resolves; no DNS server to wait for
                return reasons.CONNECTION_ERROR, f"host {host!r} not found (DNS): .invalid names never resolve"
            try:
                infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
            except (OSError, UnicodeError) as e:
                return reasons.CONNECTION_ERROR, f"host {host!r} not found (DNS: {getattr(e, 'strerror', None) or e})"
            addresses = sorted({info[4][0] for info in infos})
        refused = {a: kind for a in addresses if (kind := address_kind(a)) and not self.allowed[kind]}
        if not refused:
            return None
        if named:
            what = f"{host} resolves to " + ", ".join(f"{a} ({kind})" for a, kind in refused.items())
        else:
            what = f"{host} is a {refused[addresses[0]]} address"
        settings = " and ".join(f"crawl.{SETTINGS[kind]}: true" for kind in sorted(set(refused.values())))
        return reasons.PRIVATE_ADDRESS, f"{what}; set {settings} to crawl it"
