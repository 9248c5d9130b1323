"""Why a URL, file or record did not become a document: the stable `reason` strings of the
crawl's FAILURE rows. Downstream tools and dashboards group by these, so they never change
meaning; add new ones rather than reuse an old one.
"""

from __future__ import annotations

# refused before any request was made
ROBOTS = "robots"  # robots.txt disallows it (or robots.txt was unreachable: RFC 9309 says assume all disallowed)
EXCLUDED = "excluded"  # matches an `exclude` pattern (or a built-in rule of the pydoc demo)
OFF_SITE = "off_site"  # outside the allowed hosts or prefixes; each distinct discovered URL recorded once
PRIVATE_ADDRESS = "private_address"  # the host resolves to a private, loopback, link-local or reserved address;
# the detail names the setting that allows it (allow_private, allow_loopback, allow_link_local)
BAD_URL = "bad_url"  # cannot be parsed or normalised (bad port, bad host, bad Location header)

# failed while fetching
HTTP_ERROR = "http_error"  # a 4xx at once, a 5xx after the retries; `status` holds the code
TIMEOUT = "timeout"  # connect or read timeout, after the retries
CONNECTION_ERROR = "connection_error"  # refused or reset after the retries, or a host not found (DNS) at once
TOO_LARGE = "too_large"  # larger than `max_bytes` (declared by Content-Length, or counted while streaming)
CONTENT_TYPE = "content_type"  # a media type outside the allow-list (checked from headers, before the body)
TOO_MANY_REDIRECTS = "too_many_redirects"  # more than `max_redirects` hops
REDIRECT_LOOP = "redirect_loop"  # a hop led back to a URL already in the same chain

# local inputs
UNREADABLE = "unreadable"  # a file that cannot be opened or read
MALFORMED = "malformed"  # a jsonl line, WARC record or dataset row that cannot be parsed or lacks its text

ALL = (
    ROBOTS, EXCLUDED, OFF_SITE, PRIVATE_ADDRESS, BAD_URL,
    HTTP_ERROR, TIMEOUT, CONNECTION_ERROR, TOO_LARGE, CONTENT_TYPE, TOO_MANY_REDIRECTS, REDIRECT_LOOP,
    UNREADABLE, MALFORMED,
)  # fmt: skip
