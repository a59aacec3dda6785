"""URLs that may carry secrets: masked for display and logs, credentials kept for requests.

``http://user:pass@host`` (a Prometheus behind basic auth) shows as ``http://***@host``; a
webhook URL, whose path or query is often the secret itself (Slack, generic hooks), shows as
``scheme://host/…``.
"""

from __future__ import annotations

import base64
import urllib.parse

MASK = "***"


def _netloc_without_userinfo(parts: urllib.parse.SplitResult) -> str:
    return parts.netloc.rpartition("@")[2]


def split_credentials(url: str) -> tuple[str, str | None]:
    """``(url without userinfo, Authorization header value or None)`` for basic auth."""
    parts = urllib.parse.urlsplit(url)
    if "@" not in parts.netloc:
        return url, None
    bare = parts._replace(netloc=_netloc_without_userinfo(parts)).geturl()
    user = urllib.parse.unquote(parts.username or "")
    password = urllib.parse.unquote(parts.password or "")
    token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    return bare, f"Basic {token}"


def mask_url(url: str) -> str:
    """The URL with its userinfo replaced by ``***`` (path and query kept)."""
    parts = urllib.parse.urlsplit(url)
    if "@" in parts.netloc:
        return parts._replace(netloc=f"{MASK}@{_netloc_without_userinfo(parts)}").geturl()
    if (
        not parts.netloc and "@" in url
    ):  # no "scheme://": urlsplit sees no userinfo, yet "@" ends one
        return f"{MASK}@{url.rpartition('@')[2]}"
    return url


def mask_webhook(url: str) -> str:
    """``scheme://host:port/…``: userinfo, path, query and fragment hidden."""
    parts = urllib.parse.urlsplit(url)
    host = _netloc_without_userinfo(parts)
    hidden = parts.path.strip("/") or parts.query or parts.fragment
    return f"{parts.scheme}://{host}{'/…' if hidden else ''}"


def url_secrets(url: str | None) -> list[str]:
    """Substrings of ``url`` a log must not show (longest first), raw and percent-encoded."""
    if not url:
        return []
    parts = urllib.parse.urlsplit(url)
    found = {parts.username or "", parts.password or "", parts.query, parts.fragment}
    path = parts.path.strip("/")
    found |= {path, f"{path}?{parts.query}" if parts.query else path}
    found |= {v for _, v in urllib.parse.parse_qsl(parts.query)}
    found |= {urllib.parse.unquote(s) for s in found} | {urllib.parse.quote(s) for s in found}
    return sorted((s for s in found if len(s) >= 4), key=len, reverse=True)
