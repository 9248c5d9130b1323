"""robots.txt rules for one origin, decided the RFC 9309 way.

The outcome of fetching `/robots.txt` decides the rules:

* 2xx: parse it (`urllib.robotparser`; at most `MAX_ROBOTS_BYTES` are read, as the RFC allows);
* 4xx ("unavailable", 404 most often): no rules, everything is allowed;
* 5xx, 429, a timeout or an unreachable server ("unreachable"): everything is disallowed;
* more than five redirects: unavailable, everything is allowed.

Note that `urllib.robotparser` applies the first matching rule of a group, not the longest
match the RFC asks for; sites that list a broad `Disallow` before a narrower `Allow` are read
more strictly than by Google.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.robotparser import RobotFileParser

MAX_ROBOTS_BYTES = 512 * 1024
MAX_ROBOTS_REDIRECTS = 5


@dataclass
class RobotsRules:
    parser: RobotFileParser | None = None  # None: a blanket verdict (`allow_all`)
    allow_all: bool = True
    why: str = "no robots.txt"  # how the rules were obtained, for failure details

    @classmethod
    def parsed(cls, text: str, url: str) -> RobotsRules:
        parser = RobotFileParser(url)
        parser.parse(text.splitlines())
        return cls(parser=parser, allow_all=False, why=f"{url} disallows it")

    @classmethod
    def unavailable(cls, why: str) -> RobotsRules:
        return cls(None, True, why)

    @classmethod
    def unreachable(cls, why: str) -> RobotsRules:
        return cls(None, False, f"{why}; RFC 9309: an unreachable robots.txt disallows everything")

    def allows(self, url: str, user_agent: str) -> bool:
        if self.parser is None:
            return self.allow_all
        return self.parser.can_fetch(user_agent, url)

    def crawl_delay(self, user_agent: str) -> float | None:
        if self.parser is None:
            return None
        delay = self.parser.crawl_delay(user_agent)
        try:
            return float(delay) if delay is not None else None
        except (TypeError, ValueError):
            return None


def rules_for_status(status: int, body: bytes, url: str) -> RobotsRules:
    """Rules from the final response to a robots.txt request."""
    if 200 <= status < 300:
        return RobotsRules.parsed(body[:MAX_ROBOTS_BYTES].decode("utf-8", errors="replace"), url)
    if status == 429 or status >= 500:
        return RobotsRules.unreachable(f"{url} answered HTTP {status}")
    return RobotsRules.unavailable(f"{url} answered HTTP {status}")  # 4xx (and odd 1xx/3xx)
