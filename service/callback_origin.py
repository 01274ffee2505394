"""The origin (scheme, host, port) of a callback URL: what the per-endpoint delivery limit and the
slow-down are keyed on, so `…?i=1` and `…?i=2` (or a userinfo, a case change, an explicit default
port) are one endpoint. The PostgreSQL migration 0007 defines segflow_origin() with this same
regular expression; SQLite gets this function registered on its connections."""

from __future__ import annotations

import re

# The host alternatives cannot both match (a bracketed IPv6 literal, or a name not starting with
# "["), so Python's first-match and PostgreSQL's longest-match read every URL alike.
_ORIGIN = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://(?:[^@/?#]*@)?(\[[^]/?#]*\]|[^:/?#\[@][^:/?#@]*|)(?::([0-9]*))?")
_DEFAULT_PORT = {"https": "443"}


def origin_of(url: str) -> str:
    m = _ORIGIN.match(url)
    if m is None:
        return url
    scheme, host, port = m.group(1).lower(), m.group(2).lower(), m.group(3)
    return f"{scheme}://{host}:{port or _DEFAULT_PORT.get(scheme, '80')}"
