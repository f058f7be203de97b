"""Whose X-Forwarded-For a service API believes: only its proxies' (``IMT_TRUSTED_PROXIES``).

The gateway overwrites X-Forwarded-For with the address it saw, so a request it forwards
carries the client's address. Any other caller that reaches an API (a container of the
compose network, where the APIs listen on 0.0.0.0) could write any address there, escape
the per-address login back-off with a new one on each attempt, or invent analytics
visitors. So the header is believed only from a trusted peer; from any other, the client is
the peer itself. uvicorn's own middleware does the rewriting (``request.client``; with one
entry, as the gateway sends, that entry), in the app rather than in ``serve`` so that
every way of running the app carries the same trust.
"""

from __future__ import annotations

import ipaddress

from fastapi import FastAPI
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware


class UntrustableProxy(ValueError):
    """An ``IMT_TRUSTED_PROXIES`` entry that is neither an IP address nor a network."""


def trusted_proxies(setting: str) -> list[str]:
    """The entries of ``setting``; a malformed one is refused at start-up, because uvicorn
    would keep it as a literal that no peer ever matches (and ``*`` would trust every peer)."""
    entries = [entry.strip() for entry in setting.split(",") if entry.strip()]
    for entry in entries:
        try:
            # As uvicorn parses them, so what passes here means the same there.
            if "/" in entry:
                ipaddress.ip_network(entry)
            else:
                ipaddress.ip_address(entry)
        except ValueError:
            raise UntrustableProxy(
                f"IMT_TRUSTED_PROXIES: {entry!r} is not an IP address or network"
            ) from None
    return entries


def trust_forwarded_for(app: FastAPI, proxies: str) -> None:
    """Resolve ``request.client`` from X-Forwarded-For when the peer is one of ``proxies``."""
    # Added last, so it runs first: every middleware and route sees the resolved client.
    app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=trusted_proxies(proxies))
