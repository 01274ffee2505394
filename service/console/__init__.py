"""The operator console: one page, its script and its style, served by segflow from the package.

The page asks for an API key and calls the JSON API (`/v1/...`) with it, so a tenant sees only what
its key may read; nothing here reads the store. Every asset comes from segflow itself (no CDN: users
run it in closed networks), under a Content-Security-Policy that allows no inline script.
"""

from __future__ import annotations

from service.console.assets import console_routes

__all__ = ["console_routes"]
