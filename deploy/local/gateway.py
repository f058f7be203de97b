"""The HTTP(S) gateway: nginx in front of the services and the web pages, loopback only."""

from __future__ import annotations

import hashlib
import http.client
import ipaddress
import json
import os
import pwd
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from deploy.local import procs
from deploy.local.layout import HOST, REPO_ROOT, Layout
from deploy.local.tls import TlsFiles, ensure_certificates

NAME = "gateway"
INSTALL = "apt-get install -y --no-install-recommends nginx"
READY_TIMEOUT = 60.0  # a fresh machine starts the whole stack at once on 2 cores

# Where each service listens; /api/<service>/... goes there with the URI untouched.
UPSTREAMS: dict[str, str] = {
    "accounts": f"{HOST}:8101",
    "deletion": f"{HOST}:8102",
    "notifier": f"{HOST}:8103",
    "analytics": f"{HOST}:8104",
}

# A benchmark's bare app behind the same gateway path as a service (bench/accounts.py):
# /api/bench/... goes to it, so a service and its baseline pay the same proxy hop.
BENCH_UPSTREAM_ENV = "IMT_GATEWAY_BENCH_UPSTREAM"


def upstreams() -> dict[str, str]:
    """The services, and the benchmark's bare app while a benchmark names one."""
    bench = os.environ.get(BENCH_UPSTREAM_ENV)
    if not bench:
        return dict(UPSTREAMS)
    host, _, port = bench.rpartition(":")
    if host != HOST or not port.isdigit():
        raise ValueError(f"{BENCH_UPSTREAM_ENV} must be {HOST}:<port>, not {bench!r}")
    return {**UPSTREAMS, "bench": bench}


CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "font-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)

MIME_TYPES = {
    "text/html": "html htm",
    "text/css": "css",
    "text/plain": "txt",
    "application/javascript": "js mjs",
    "application/json": "json",
    "application/manifest+json": "webmanifest",
    "image/svg+xml": "svg",
    "image/png": "png",
    "image/x-icon": "ico",
    "font/woff2": "woff2",
}


def _problem(status: int, title: str, detail: str) -> str:
    # RFC 9457 body; kept on one line because nginx returns it verbatim.
    return f'{{"type":"about:blank","title":"{title}","status":{status},"detail":"{detail}"}}'


PROBLEMS = {
    "unavailable": (503, "Service Unavailable", "The service behind this path is not running."),
    # A request that timed out may have been carried out (a write committed just after
    # nginx stopped waiting): no Retry-After, which would invite sending it twice.
    "timed_out": (
        504,
        "Gateway Timeout",
        "The service did not answer in time; the request may have been carried out."
        " Check before sending it again.",
    ),
    "rate_limited": (429, "Too Many Requests", "Slow down: too many requests from you."),
    "too_large": (
        413,
        "Content Too Large",
        "The request body is larger than this path takes (64 KiB for most).",
    ),
    "not_found": (404, "Not Found", "No service answers this path."),
    "bad_request": (400, "Bad Request", "The request could not be read."),
    # nginx's 494 (a header line or all headers past large_client_header_buffers) is a
    # 400 on the wire, as nginx sends it: 431 has no status line in nginx's table.
    "header_too_large": (400, "Bad Request", "The request headers are too large."),
    "uri_too_long": (414, "URI Too Long", "The URL, query string included, is too long."),
    # What nginx refuses itself: TRACE, or a method a static path does not take (the
    # services' own 405s pass through); a transfer coding other than chunked; a request
    # line of another HTTP version (HTTP/2 is spoken on the TLS port only). The statuses
    # are the ones HTTP names for them.
    "not_allowed": (405, "Method Not Allowed", "This path does not take that method."),
    "not_implemented": (
        501,
        "Not Implemented",
        "The gateway does not take the method or transfer coding of this request.",
    ),
    "http_version": (
        505,
        "HTTP Version Not Supported",
        "Send HTTP/1.1, or HTTP/2 over TLS.",
    ),
}

# nginx's own errors and their problem bodies. The server's error pages also answer what
# fails before a location is chosen (a request line or header too long, a malformed
# request); a location with an error_page of its own drops all of the server's, so each
# such location repeats these. (Errors of the services pass through: intercept is off.)
ERROR_PAGES = {
    400: "bad_request",
    405: "not_allowed",
    413: "too_large",
    414: "uri_too_long",
    429: "rate_limited",
    494: "header_too_large",
    501: "not_implemented",
    505: "http_version",
}


# A request line nginx cannot read (too long, malformed: "GET /../x", "%00", another
# HTTP version) leaves it no URI to hand a named location: it answers its own 500 page
# instead. These error pages are internal URIs of their own.
BY_URI = {
    "bad_request",
    "header_too_large",
    "uri_too_long",
    "not_allowed",
    "not_implemented",
    "http_version",
}
PROBLEM_URI = "/_problem/"


def _error_pages(indent: str = "    ") -> str:
    return "".join(
        f"{indent}error_page {code} {PROBLEM_URI}{name};\n"
        if name in BY_URI
        else f"{indent}error_page {code} = @{name};\n"
        for code, name in ERROR_PAGES.items()
    )


@dataclass(frozen=True)
class Placement:
    """What differs between one gateway and another (the local stack's, a container's):
    where it listens, where the services are, and where its files are."""

    listen_host: str
    http_port: int
    https_port: int
    upstreams: Mapping[str, str]  # service -> host:port
    rate_per_second: int
    web_root: str
    conf_dir: str  # holds headers.conf and site.conf, which the configuration includes
    pidfile: str
    error_log: str
    access_log: str
    temp_dir: str
    cert: str
    key: str
    user: str  # the workers' "user" directive, or "" when the master is not root
    public_host: str = "localhost"  # the name browsers reach it by (server_name)
    # Where operators' endpoints answer from (OPERATOR_PATHS); anyone else finds nothing.
    operator_networks: tuple[str, ...] = ("127.0.0.1", "::1")


# Names of this machine: HSTS pinned on one of them would hold for every local program
# served over http on any port of it, long after this gateway has stopped.
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})
HSTS_MAX_AGE = 31536000


def hsts(place: Placement) -> str:
    """The https responses' Strict-Transport-Security: a year on a public name; max-age=0
    on loopback, which also clears the year that earlier versions pinned there."""
    local = place.public_host.lower() in LOOPBACK_HOSTS
    return f"max-age={0 if local else HSTS_MAX_AGE}"


def home(layout: Layout) -> Path:
    return layout.state / "gateway"


def conf_path(layout: Layout) -> Path:
    return home(layout) / "nginx.conf"


def access_log(layout: Layout) -> Path:
    return layout.logs / "gateway-access.log"


def web_root(layout: Layout) -> Path:
    """A published copy of the repo's web/ in the state folder.

    nginx's unprivileged workers could not read a clone under a private home folder;
    the copy is world-readable and refreshed on every ``up``.
    """
    return home(layout) / "web"


def publish_web(layout: Layout) -> None:
    source, target = REPO_ROOT / "web", web_root(layout)
    staging = target.with_name("web.new")
    shutil.rmtree(staging, ignore_errors=True)
    if source.is_dir():
        shutil.copytree(source, staging)
    else:
        staging.mkdir(parents=True)
    for path in [staging, *staging.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)


def _worker_user() -> str:
    # Only a root master switches user; workers then need a real unprivileged account.
    if not procs.is_root():
        return ""
    for user, group in (("www-data", "www-data"), ("nobody", "nogroup")):
        try:
            pwd.getpwnam(user)
        except KeyError:
            continue
        return f"user {user} {group};\n"
    return ""


def render_headers() -> str:
    return "".join(
        f'add_header {name} "{value}" always;\n'
        for name, value in (
            ("Content-Security-Policy", CSP),
            ("Referrer-Policy", "no-referrer"),
            ("X-Content-Type-Options", "nosniff"),
            ("X-Frame-Options", "DENY"),
            ("Cross-Origin-Opener-Policy", "same-origin"),
            ("Permissions-Policy", "camera=(), microphone=(), geolocation=(), interest-cohort=()"),
            ("X-Request-Id", "$imt_request_id"),
            # Empty, so not sent, on plain http (see render_conf), where browsers ignore it.
            ("Strict-Transport-Security", "$imt_hsts"),
        )
    )


def _named_locations(include: str) -> str:
    blocks = []
    for name, (status, title, detail) in PROBLEMS.items():
        retry = "add_header Retry-After 1 always;\n    " if status in (429, 503) else ""
        where = f"= {PROBLEM_URI}{name} {{\n    internal;" if name in BY_URI else f"@{name} {{"
        blocks.append(
            f"location {where}\n    include {include};\n    {retry}"
            # No types: else a URI's extension sets the type (".json": application/json).
            f"types {{ }}\n    default_type application/problem+json;\n"
            f"    return {status} '{_problem(status, title, detail)}\\n';\n}}\n"
        )
    return "".join(blocks)


DEFAULT_RATE_PER_SECOND = 50

# Every service's /healthz and /readyz (shared/observability/health.py): never public.
INTERNAL_PATHS = ("healthz", "readyz")
API_READ_TIMEOUT = "30s"
# Operators' checks that read a whole store (the audit chain from its first row, every
# store for one subject) grow with the data: they get minutes, not seconds.
LONG_CHECKS = {
    "accounts": "/api/accounts/operator/audit/verify",
    "deletion": "/api/deletion/operator/requests/[^/]+/verify",
}
LONG_CHECK_TIMEOUT = "10m"

# Request bodies: BODY_LIMIT, which every route's largest valid body fits but operators'
# bulk calls, each sized for its own (tests/unit/deploy/test_gateway_conf.py computes
# every route's largest body from its schema and holds it to its location's limit): an
# incident's 20,000 affected users (~860 KB of JSON, accounts' IncidentIn) and a replay
# of 10,000 dead letters (~230 KB, the notifier's Replay).
BODY_LIMIT = "64k"
BULK_BODIES = {
    "accounts": ("/api/accounts/operator/incidents", "1m"),
    "notifier": ("/api/notifier/ops/dead-letters/replay", "256k"),
}

# The live inbox (server-sent events) holds a connection for up to an hour; without a
# cap, one address could open enough of them to take every worker connection.
INBOX_STREAM = "/api/notifier/inbox/stream"
STREAMS_PER_CLIENT = 8
# Each proxied request holds two connections (client and upstream): room for ~2000.
WORKER_CONNECTIONS = 4096


# Operators' endpoints (accounts' and deletion's /operator, the notifier's /ops): a token
# is not all they need. They answer only to operators' networks, so that no one on the
# internet can guess an operator's password or map those routes.
OPERATOR_PATHS = "(?:operator|ops)(?:/|$)"
# The analysts' views of analytics, outside those prefixes (its public trends are not).
ANALYST_PATHS = {"analytics": "/api/analytics/+(?:trends(?:/partner)?|suppressed)/*$"}


class UnusableNetwork(ValueError):
    """An IMT_GATEWAY_OPERATOR_NETWORKS entry that is neither an address nor a network."""


def operator_networks() -> tuple[str, ...]:
    """IMT_GATEWAY_OPERATOR_NETWORKS (comma separated addresses or networks; default this
    machine's loopback addresses)."""
    setting = os.environ.get("IMT_GATEWAY_OPERATOR_NETWORKS", "127.0.0.1,::1")
    entries = tuple(e.strip() for e in setting.split(",") if e.strip())
    for entry in entries:
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise UnusableNetwork(
                f"IMT_GATEWAY_OPERATOR_NETWORKS: {entry!r} is not an IP address or network"
            ) from None
    return entries


def _operators_only(place: Placement) -> str:
    allowed = "".join(f"    allow {network};\n" for network in place.operator_networks)
    # Refused as not found (our problem body), not as forbidden: nothing is there for them.
    return f"{allowed}    deny all;\n    error_page 403 = @not_found;\n"


TLS12_CIPHERS = ":".join(
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
    )
)


def _operator_routes(place: Placement, services: str) -> str:
    # Before the service's own regex, which would match these too: the first match wins.
    analysts = "".join(
        f"location ~ ^{path} {{\n"
        f"{_operators_only(place)}    proxy_pass http://svc_{service};\n{_PROXY}{_BUFFERED}}}\n\n"
        for service, path in ANALYST_PATHS.items()
        if service in place.upstreams
    )
    return analysts + (
        f"location ~ ^/api/(?<imt_service>{services})/+{OPERATOR_PATHS} {{\n"
        f"{_operators_only(place)}    proxy_pass http://svc_$imt_service;\n{_PROXY}{_BUFFERED}}}\n\n"
    )


def rate_per_second() -> int:
    """Requests per second per client address (IMT_GATEWAY_RATE_PER_SECOND, default 50).

    The test run raises it: every test client shares 127.0.0.1.
    """
    return int(os.environ.get("IMT_GATEWAY_RATE_PER_SECOND", str(DEFAULT_RATE_PER_SECOND)))


def render_site(place: Placement, version: str = "") -> str:
    """Server body shared by the http and https listeners; /healthz names ``version``."""
    headers = f"{place.conf_dir}/headers.conf"
    services = "|".join(place.upstreams)
    own_routes = (
        _inbox_stream(place)
        + _long_checks(place)
        + _bulk_bodies(place)
        + _operator_routes(place, services)
    )
    return f"""\
root {place.web_root};
index index.html;
limit_req zone=per_client burst={2 * place.rate_per_second} nodelay;
include {headers};
# A location with its own error_page drops these, so each such location repeats them.
{_error_pages("")}
# "config" tells a reload's caller when the new workers answer (see up()).
location = /healthz {{
    default_type application/json;
    return 200 '{{"status":"ok","config":"{version}"}}\\n';
}}

location / {{
    try_files $uri $uri.html $uri/index.html =404;
}}

# Global Privacy Control support resource, published by the analytics service.
location = /.well-known/gpc.json {{
    proxy_pass http://svc_analytics/api/analytics/.well-known/gpc.json;
{_PROXY}{_BUFFERED}}}

# /api without its slash is no page of the web site: the API's JSON 404.
location = /api {{
{_error_pages()}    error_page 404 = @not_found;
    return 404;
}}

location /api/ {{
{_error_pages()}    error_page 404 = @not_found;
    return 404;
}}

# Readiness names each failing dependency: for operators on the service's own port only.
location ~ ^/api/(?:{services})/+(?:{"|".join(INTERNAL_PATHS)})/*$ {{
{_error_pages()}    error_page 404 = @not_found;
    return 404;
}}

{own_routes}location ~ ^/api/(?<imt_service>{services})(?:/|$) {{
    proxy_pass http://svc_$imt_service;
{_PROXY}{_BUFFERED}}}

{_named_locations(headers)}"""


# What every route to a service says, after its proxy_pass. A connection refused or a
# service not running (502, 503): nothing was done, try again. A timeout (504): it may
# have been done, so its own answer, without Retry-After (see PROBLEMS).
_PROXY = """\
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_set_header Host $host;
    # We are the edge: what a client claims in X-Forwarded-For is not kept.
    proxy_set_header X-Forwarded-For $remote_addr;
    proxy_set_header X-Forwarded-Proto $scheme;
    proxy_set_header X-Request-Id $request_id;
    proxy_set_header DNT $http_dnt;
    proxy_set_header Sec-GPC $http_sec_gpc;
    proxy_connect_timeout 2s;
    # Upstream errors (their own problem bodies) pass through; only ours are replaced.
    proxy_intercept_errors off;
    error_page 502 503 = @unavailable;
    error_page 504 = @timed_out;
""" + _error_pages()

# An API call answers within seconds; a stuck upstream must not hold a connection for long.
_BUFFERED = f"""\
    proxy_buffering on;
    proxy_max_temp_file_size 0;
    proxy_read_timeout {API_READ_TIMEOUT};
"""

# Server-sent events (the live inbox) stream, unbuffered, for as long as a page is open.
_STREAMED = """\
    proxy_buffering off;
    proxy_read_timeout 1h;
"""


def _long_checks(place: Placement) -> str:
    # Regex locations are tried in order: these come before the service's own.
    return "".join(
        f"location ~ ^{path}/?$ {{\n{_operators_only(place)}"
        f"    proxy_pass http://svc_{service};\n{_PROXY}"
        f"    proxy_buffering on;\n    proxy_max_temp_file_size 0;\n"
        f"    proxy_read_timeout {LONG_CHECK_TIMEOUT};\n}}\n\n"
        for service, path in LONG_CHECKS.items()
        if service in place.upstreams
    )


def _bulk_bodies(place: Placement) -> str:
    # Before the operators' regex, which would match these too: the first match wins.
    # The buffer is the limit: such a body stays in memory, as every other one does.
    return "".join(
        f"location ~ ^{path}/?$ {{\n{_operators_only(place)}"
        f"    client_max_body_size {size};\n    client_body_buffer_size {size};\n"
        f"    proxy_pass http://svc_{service};\n{_PROXY}{_BUFFERED}}}\n\n"
        for service, (path, size) in BULK_BODIES.items()
        if service in place.upstreams
    )


def _inbox_stream(place: Placement) -> str:
    if "notifier" not in place.upstreams:
        return ""
    # An exact location wins over the regex below; limit_conn counts each open stream
    # (each HTTP/2 stream too) and answers 429, our problem body, past the limit.
    return (
        f"location = {INBOX_STREAM} {{\n"
        f"    limit_conn streams_per_client {STREAMS_PER_CLIENT};\n"
        f"    proxy_pass http://svc_notifier;\n{_PROXY}{_STREAMED}}}\n\n"
    )


def local_placement(layout: Layout, tls: TlsFiles) -> Placement:
    """The local stack's gateway: loopback ports, files in the state folder."""
    return Placement(
        listen_host=HOST,
        http_port=layout.ports.gateway,
        https_port=layout.ports.gateway_tls,
        upstreams=upstreams(),
        rate_per_second=rate_per_second(),
        web_root=str(web_root(layout)),
        conf_dir=str(home(layout)),
        pidfile=str(layout.pidfile(NAME)),
        error_log=str(layout.log(NAME)),
        access_log=str(access_log(layout)),
        temp_dir=str(home(layout) / "tmp"),
        cert=str(tls.cert),
        key=str(tls.key),
        user=_worker_user(),
        operator_networks=operator_networks(),
    )


# /api/notifier/unsubscribe/<token>, and any other path a token was pasted into: all
# that follows the first /unsubscribe/ goes (it could hold a second one).
UNSUBSCRIBE_IN_PATH = '"~*^(?<imt_log_head>.*?/unsubscribe/)."'
UNSUBSCRIBE_LOGGED = '"${imt_log_head}{token}"'
# A mailed link's token follows a "#" (/reset-password#token=...), which a browser never
# sends; a link rewriter may encode it (%23, and $uri is decoded), and the page's 404 is
# logged: all that follows an encoded "#" or "?" goes.
MARK_IN_PATH = '"~^(?<imt_mark_head>[^#?]*)(?<imt_mark>[#?])"'
MARK_LOGGED = '"${imt_mark_head}${imt_mark}{token}"'
# A token pasted anywhere else: a run of 20 characters or more of the URL-safe alphabet
# with a capital, a digit or an underscore in it (a token_urlsafe(32) lacks all three
# once in 10^16). No route's name is one: lower case and hyphens
# (/deletion-cancellations). One is replaced; a path with another is not logged at all
# (PERSONAL_LEFT).
_URLSAFE_RUN = "(?<![A-Za-z0-9_-])(?=[A-Za-z0-9_-]{20})(?=[a-z-]*[A-Z0-9_])[A-Za-z0-9_-]+"
RUN_IN_PATH = f'"~^(?<imt_key_head>.*?){_URLSAFE_RUN}(?<imt_key_tail>.*)$"'
RUN_LOGGED = '"${imt_key_head}{token}${imt_key_tail}"'
# $uri is decoded, and escape=json passes bytes above 0x7f as they are: a path of %FF
# would write a byte no UTF-8 reader (log shipper, json.loads) takes. A path that is not
# UTF-8 is logged as UNREADABLE_PATH; PCRE in nginx matches bytes, one character each.
UNREADABLE_PATH = "{not utf-8}"
UTF8_PATH = (
    r'"~^(?:[\x00-\x7f]|[\xc2-\xdf][\x80-\xbf]|\xe0[\xa0-\xbf][\x80-\xbf]'
    r"|[\xe1-\xec\xee\xef][\x80-\xbf]{2}|\xed[\x80-\x9f][\x80-\xbf]"
    r'|\xf0[\x90-\xbf][\x80-\xbf]{2}|[\xf1-\xf3][\x80-\xbf]{3}|\xf4[\x80-\x8f][\x80-\xbf]{2})*+$"'
)
# Ids in paths (a user's, their devices', requests', deletions') say whose data a
# request touched: logged as {id}, so the log names no one (ids stay in the audit log,
# which is erased or kept by rule). Up to ID_MAPS of them, one map each.
UUID_PATTERN = "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
# A row number as a path segment (an inbox item: /api/notifier/inbox/123/read).
NUMBER_PATTERN = "/[0-9]+(?=/|$)"
# Whatever else a caller put in a path segment that may be personal data: an email
# address (an @), a card or phone number, a date of birth (five digits or more, however
# written: 4111-1111-1111-1111). No route of the platform has such a segment; a page's
# "v2" or "site.css" is kept.
_PERSONAL_SEGMENT = "(?=[^/]*@|(?:[^/0-9]*[0-9]){5})"
PERSONAL_PATTERN = f"/{_PERSONAL_SEGMENT}[^/]+"
# Each map replaces the first of these left, in this order. A path with more personal
# segments than the maps, or eight digits or more left in all (a card number split
# across segments, /4111/1111/1111/1111), or a second token, is not logged at all
# (PERSONAL_LEFT).
ID_RULES = (
    *(3 * [(UUID_PATTERN, "{id}")]),
    (NUMBER_PATTERN, "/{id}"),
    *(3 * [(PERSONAL_PATTERN, "/{id}")]),
)
ID_MAPS = len(ID_RULES)
PERSONAL_LEFT = f'"~/{_PERSONAL_SEGMENT}|^(?:[^0-9]*[0-9]){{8}}|{_URLSAFE_RUN}"'
WITHHELD_PATH = "{withheld}"


def _id_maps() -> str:
    """$uri -> $imt_log_1 -> ... -> $imt_log_<ID_MAPS>: each replaces the first id left
    (:data:`ID_RULES`)."""
    maps = []
    for n, (found, replaced) in enumerate(ID_RULES, start=1):
        source = "$uri" if n == 1 else f"$imt_log_{n - 1}"
        pattern = f'"~*^(?<imt_id{n}_head>.*?){found}(?<imt_id{n}_tail>.*)$"'
        value = f'"${{imt_id{n}_head}}{replaced}${{imt_id{n}_tail}}"'
        maps.append(
            f"map {source} $imt_log_{n} {{\n    default {source};\n    {pattern} {value};\n}}\n"
        )
    return "".join(maps)


# A caller's request id holding what may be a card number (13 digits in a row, however
# separated: 4111-1111-1111-1111, card4111111111111111) is not kept: it would be logged,
# and sent back. A hex id has such a run now and then (a few in a hundred UUIDs): it is
# replaced too, and the answer's X-Request-Id is the one to quote.
CARD_LIKE_ID = '"~[0-9](?:[-._:]*[0-9]){12}"'


# How a service's replicas share its requests (nginx's default: round robin).
BALANCING = {"analytics": "hash $imt_client_network consistent; "}


def render_conf(place: Placement, origin: str = "deploy/local/gateway.py on every `up`") -> str:
    tmp = place.temp_dir
    types = "".join(f"    {mime} {exts};\n" for mime, exts in MIME_TYPES.items())
    upstream_blocks = "".join(
        f"upstream svc_{name} {{ {BALANCING.get(name, '')}server {address} max_fails=0;"
        " keepalive 8; }\n"
        for name, address in place.upstreams.items()
    )
    site = f"{place.conf_dir}/site.conf"
    return f"""\
# Written by {origin}; edit there.
{place.user}worker_processes 1;
pid {place.pidfile};
error_log {place.error_log} warn;
# Two descriptors per proxied request, and some files: more than the usual 1024 limit.
worker_rlimit_nofile {2 * WORKER_CONNECTIONS};
events {{ worker_connections {WORKER_CONNECTIONS}; }}

http {{
types {{
{types}}}
default_type application/octet-stream;
server_tokens off;
sendfile on;
client_body_temp_path {tmp}/body;
proxy_temp_path {tmp}/proxy;
fastcgi_temp_path {tmp}/fastcgi;
uwsgi_temp_path {tmp}/uwsgi;
scgi_temp_path {tmp}/scgi;

# Tokens act without a login, and some never expire (unsubscribe, deletion status):
# whoever reads one in a log can act as its recipient (reset their password, say), so
# the path is logged without it.
{_id_maps()}map $imt_log_{ID_MAPS} $imt_log_tokenless {{
    default $imt_log_{ID_MAPS};
    {UNSUBSCRIBE_IN_PATH} {UNSUBSCRIBE_LOGGED};
}}
map $imt_log_tokenless $imt_log_unmarked {{
    default $imt_log_tokenless;
    {MARK_IN_PATH} {MARK_LOGGED};
}}
map $imt_log_unmarked $imt_log_keyless {{
    default $imt_log_unmarked;
    {RUN_IN_PATH} {RUN_LOGGED};
}}
map $imt_log_keyless $logged_path {{
    default "{UNREADABLE_PATH}";
    {PERSONAL_LEFT} "{WITHHELD_PATH}";
    {UTF8_PATH} $imt_log_keyless;
}}

# Privacy: no client address, no query string ($uri has none), no referrer, no user agent,
# no token, no id, no address or number a caller put in the path.
log_format privacy escape=json '{{"time":"$time_iso8601","method":"$request_method",'
    '"path":"$logged_path","status":$status,"bytes":$body_bytes_sent,'
    '"request_time":$request_time,"upstream":"$upstream_addr","request_id":"$imt_request_id",'
    '"trace_id":"$request_id"}}';
access_log {place.access_log} privacy;
# A request's error line (upstream down, timeout, client gone) names the client address
# and repeats the request line, an unsubscribe token included. Those stay out: the
# access log above records each failed request (status, upstream, time) without them;
# only critical errors are kept here (start-up problems are logged before this block).
error_log {place.error_log} crit;

# Each analytics replica salts visitors with its own daily salt, so a network counts once
# per replica that served it: every request of one network goes to the same replica.
# The key names the network truncate_ip hashes: a /24, or a /48 whose three groups nginx
# may have compressed ("2a02:8070::1" is in 2a02:8070:0::/48) or mapped ("::ffff:").
map $remote_addr $imt_client_network {{
    default $remote_addr;
    "~^(?:::ffff:)?(?<imt_v4>[0-9]+[.][0-9]+[.][0-9]+)[.][0-9]+$" $imt_v4;
    "~^(?<imt_v6>[0-9a-f]+:[0-9a-f]+:[0-9a-f]+):" $imt_v6;
    "~^(?<imt_v6_two>[0-9a-f]+:[0-9a-f]+)::" $imt_v6_two:0;
    "~^(?<imt_v6_one>[0-9a-f]+)::" $imt_v6_one:0:0;
    "~^::(?<imt_v6_third>[0-9a-f]+)(?::[0-9a-f]+){{5}}$" 0:0:$imt_v6_third;
    "~^::" 0:0:0;
}}

# Keep a caller's request id only when it is harmless in logs and headers. The services
# get the gateway's own id ($request_id) as their trace id instead (shared/tracing.py): a
# caller's id must not travel in events, nor mix its requests into another's trace. The
# access log holds both, so support can go from either one to the other.
map $http_x_request_id $imt_request_id {{
    default $request_id;
    {CARD_LIKE_ID} $request_id;
    "~^[A-Za-z0-9._:-]{{1,128}}$" $http_x_request_id;
}}

limit_req_zone $binary_remote_addr zone=per_client:10m rate={place.rate_per_second}r/s;
# Rejections would log the client address into the error log; keep them below its level.
limit_req_log_level info;
limit_req_status 429;
limit_conn_zone $binary_remote_addr zone=streams_per_client:10m;
limit_conn_log_level info;
limit_conn_status 429;
client_max_body_size {BODY_LIMIT};
# Bodies and responses hold personal data in the clear: kept in memory, never spooled to
# temporary files (a request body is at most client_max_body_size, here and in the
# operators' bulk locations; a response larger than the proxy buffers is passed on as it
# comes instead).
client_body_buffer_size {BODY_LIMIT};

# HSTS belongs to https responses only; it is in headers.conf with the others because
# the problem locations include that file (their add_header replaces the server's).
map $scheme $imt_hsts {{
    default "";
    https "{hsts(place)}";
}}

{upstream_blocks}
server {{
    listen {place.listen_host}:{place.http_port};
    server_name {place.public_host};
    include {site};
}}

server {{
    listen {place.listen_host}:{place.https_port} ssl http2;
    server_name {place.public_host};
    ssl_certificate {place.cert};
    ssl_certificate_key {place.key};
    ssl_protocols TLSv1.2 TLSv1.3;
    # TLS 1.2 with forward secrecy and AEAD only (Mozilla's "intermediate"): nginx's
    # default list still offers CBC suites with SHA-1. TLS 1.3's suites are all fine.
    ssl_ciphers {TLS12_CIPHERS};
    ssl_prefer_server_ciphers off;
    ssl_session_cache shared:imt_tls:1m;
    ssl_session_tickets off;
    include {site};
}}
}}
"""


def find_binary() -> str | None:
    return shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )


def ensure_binary() -> str:
    found = find_binary()
    if found:
        return found
    procs.apt_install(["nginx"], "nginx")
    return procs.require_binary("nginx", INSTALL)


def _nginx(layout: Layout, *args: str) -> list[str]:
    prefix, conf = f"{home(layout)}/", str(conf_path(layout))
    return [ensure_binary(), "-p", prefix, "-c", conf, "-e", str(layout.log(NAME)), *args]


def write_config(layout: Layout) -> tuple[bool, str]:
    """Render every config file; (whether one changed, so a running nginx must reload;
    the configuration's version, which /healthz answers once it is in force)."""
    tls = ensure_certificates(layout.tls)
    (home(layout) / "tmp").mkdir(parents=True, exist_ok=True)
    home(layout).chmod(0o755)
    publish_web(layout)
    files, version = render_files(local_placement(layout, tls))
    changed = [procs.write_atomic(home(layout) / name, text) for name, text in files.items()]
    return any(changed), version


def render_files(place: Placement, origin: str | None = None) -> tuple[dict[str, str], str]:
    """nginx.conf and the two files it includes, and their version (/healthz answers it)."""
    headers = render_headers()
    conf = render_conf(place) if origin is None else render_conf(place, origin)
    version = hashlib.sha256((headers + render_site(place) + conf).encode()).hexdigest()[:12]
    files = {"headers.conf": headers, "site.conf": render_site(place, version), "nginx.conf": conf}
    return files, version


def running_pid(layout: Layout) -> int | None:
    return procs.our_pid(layout.pidfile(NAME), str(conf_path(layout)))


def healthy(layout: Layout, version: str | None = None) -> bool:
    """/healthz answers, from workers running configuration ``version`` if given."""
    conn = http.client.HTTPConnection(HOST, layout.ports.gateway, timeout=2)
    try:
        conn.request("GET", "/healthz")
        response = conn.getresponse()
        body = response.read()
    except OSError:
        return False
    finally:
        conn.close()
    if response.status != 200:
        return False
    return version is None or json.loads(body).get("config") == version


def up(layout: Layout) -> str:
    changed, version = write_config(layout)
    pid = running_pid(layout)
    if pid is None:
        procs.require_free(layout.ports.gateway, "gateway", "IMT_GATEWAY_PORT")
        procs.require_free(layout.ports.gateway_tls, "gateway TLS", "IMT_GATEWAY_TLS_PORT")
        procs.run(_nginx(layout, "-t", "-q"), "nginx -t (config test)")
        procs.run(_nginx(layout), "nginx start")
    elif changed:
        procs.run(_nginx(layout, "-t", "-q"), "nginx -t (config test)")
        procs.run(_nginx(layout, "-s", "reload"), "nginx reload")
    # A reload returns once signalled: until the new workers take over, the old ones
    # still answer with the old routes, so wait for this configuration's version.
    if not procs.wait_for(lambda: healthy(layout, version), READY_TIMEOUT, lambda: True):
        raise procs.failure("gateway", layout.log(NAME), "/healthz did not answer")
    ports = layout.ports
    return (
        # By name: the pages count their views by site name (the collector refuses an IP).
        f"http://localhost:{ports.gateway}/  https://localhost:{ports.gateway_tls}/"
        f"  (CA {layout.tls / 'ca.pem'})"
    )


def status(layout: Layout) -> tuple[bool, str]:
    ports = (layout.ports.gateway, layout.ports.gateway_tls)
    address = f"http://localhost:{ports[0]}/  https://localhost:{ports[1]}/"
    return procs.describe(running_pid(layout), healthy(layout), ports, address)


def down(layout: Layout, wipe: bool = False) -> None:
    pid = running_pid(layout)
    if pid:
        procs.stop_pid(pid, timeout=10)
    if wipe:
        shutil.rmtree(home(layout), ignore_errors=True)
