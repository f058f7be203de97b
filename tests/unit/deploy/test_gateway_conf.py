"""The gateway's rendered nginx files keep their protections (nginx -t: tests/integration)."""

import dataclasses
import ipaddress
import json
import re
import secrets

import pytest
from hypothesis import given
from hypothesis import strategies as st

from deploy import compose
from deploy.local import gateway
from services.analytics.domain import visitor
from tests.support.largest_body import largest_bodies
from tests.support.operator_routes import operator_routes
from tools.docs import openapi_documents

FILES = compose.gateway_files()
SITE, CONF, HEADERS = FILES["site.conf"], FILES["nginx.conf"], FILES["headers.conf"]


def _locations(text: str) -> dict[str, str]:
    """Each location's opening line and its body (site.conf has no nested blocks)."""
    return dict(re.findall(r"^(location [^{]+)\{\n(.*?)^\}", text, re.M | re.S))


def _map(text: str, variable: str) -> list[tuple[str, str]]:
    body = re.search(rf"^map \S+ \${variable} \{{\n(.*?)^\}}", text, re.M | re.S)
    assert body is not None, variable
    return re.findall(r'^\s+("[^"]*"|\S+) ("[^"]*"|\S+);$', body.group(1), re.M)


# nginx's own errors, each answered with a JSON problem: a body too large, too many
# requests, a request line (query string) too long, headers too large (494, sent as 400),
# a request nginx cannot read, a method it refuses (TRACE), a transfer coding it does
# not know, another HTTP version. Those that can come before nginx has a URI are URIs
# themselves, not named locations (see gateway.BY_URI).
OWN_ERRORS = [
    "error_page 400 /_problem/bad_request;",
    "error_page 405 /_problem/not_allowed;",
    "error_page 413 = @too_large;",
    "error_page 414 /_problem/uri_too_long;",
    "error_page 429 = @rate_limited;",
    "error_page 494 /_problem/header_too_large;",
    "error_page 501 /_problem/not_implemented;",
    "error_page 505 /_problem/http_version;",
]


def test_a_location_with_its_own_error_pages_keeps_every_json_error_page() -> None:
    # nginx drops every inherited error_page from a location that declares one.
    own = {line: body for line, body in _locations(SITE).items() if "error_page" in body}
    assert "location = /.well-known/gpc.json " in own
    assert "location = /api " in own
    assert len(own) >= 6
    for line, body in own.items():
        for page in OWN_ERRORS:
            assert page in body, (line, page)


def test_errors_before_a_location_is_chosen_are_json_problems_too() -> None:
    # A request line or header too long fails while nginx reads the request: only the
    # server's error pages (those outside any location) can answer it.
    server = SITE.split("\nlocation ", 1)[0]
    for page in OWN_ERRORS:
        assert f"\n{page}\n" in server, page


@pytest.mark.parametrize(
    ("name", "status", "title"),
    [
        ("bad_request", 400, "Bad Request"),
        ("header_too_large", 400, "Bad Request"),
        ("uri_too_long", 414, "URI Too Long"),
        ("not_allowed", 405, "Method Not Allowed"),
        ("not_implemented", 501, "Not Implemented"),
        ("http_version", 505, "HTTP Version Not Supported"),
        ("too_large", 413, "Content Too Large"),
        ("rate_limited", 429, "Too Many Requests"),
        ("not_found", 404, "Not Found"),
        ("unavailable", 503, "Service Unavailable"),
        ("timed_out", 504, "Gateway Timeout"),
    ],
)
def test_each_error_page_is_a_problem_body(name: str, status: int, title: str) -> None:
    where = f"= /_problem/{name}" if name in gateway.BY_URI else f"@{name}"
    body = _locations(SITE)[f"location {where} "]
    if name in gateway.BY_URI:
        assert "internal;" in body  # never reached from outside
    assert "default_type application/problem+json;" in body
    assert "types { }" in body
    returned = re.search(r"^    return (\d+) '(.*)\\n';$", body, re.M)
    assert returned is not None, body
    assert int(returned.group(1)) == status
    problem = json.loads(returned.group(2))
    assert problem["type"] == "about:blank"
    assert (problem["status"], problem["title"]) == (status, title)
    assert problem["detail"]


def test_an_upstream_timeout_is_its_own_504_and_invites_no_retry() -> None:
    # A timed-out POST may have been carried out upstream: a 503 "not running" with
    # Retry-After would have the client send it again. A service refusing or down
    # (502, 503) did nothing, and keeps its 503 with Retry-After.
    proxied = {line: body for line, body in _locations(SITE).items() if "proxy_pass" in body}
    assert len(proxied) >= 6
    for line, body in proxied.items():
        pages = dict(re.findall(r"^    error_page ([\d ]+) = (@\w+);$", body, re.M))
        assert pages.get("502 503") == "@unavailable", line
        assert pages.get("504") == "@timed_out", line
        assert not [codes for codes in pages if "504" in codes.split() and codes != "504"], line
    timed_out = _locations(SITE)["location @timed_out "]
    assert "Retry-After" not in timed_out
    assert "return 504 " in timed_out
    assert "may have been carried out" in timed_out
    unavailable = _locations(SITE)["location @unavailable "]
    assert "add_header Retry-After 1 always;" in unavailable
    assert "return 503 " in unavailable


def test_api_without_its_slash_is_the_json_404_not_the_web_site() -> None:
    exact = _locations(SITE)["location = /api "]
    assert "error_page 404 = @not_found;" in exact
    assert "return 404;" in exact
    assert "proxy_pass" not in exact
    assert "try_files" not in exact


def test_hsts_is_sent_on_https_only_with_every_other_header() -> None:
    assert 'add_header Strict-Transport-Security "$imt_hsts" always;' in HEADERS
    assert dict(_map(CONF, "imt_hsts")) == {"default": '""', "https": '"max-age=0"'}
    assert "map $scheme $imt_hsts" in CONF
    assert "return 301" not in SITE + CONF  # the plain listener stays a plain listener
    # The problem bodies carry it too: they include the same headers.
    for line, body in _locations(SITE).items():
        if line.startswith("location @"):
            assert "include /etc/nginx/imt/headers.conf;" in body, line


def _logged(path: str) -> str:
    """$logged_path for ``path``: the chain of maps from $uri, each by its own regex
    (PCRE and re agree on them)."""
    source = "$uri"
    for name in _map_chain("$uri", "logged_path"):
        rules = dict(_map(CONF, name))
        assert rules.pop("default") == source
        [(pattern, value)] = rules.items()
        path = _mapped(path, pattern, value)
        source = f"${name}"
    # The last map withholds a path with personal segments left over, keeps one that is
    # UTF-8 (any str here), and names it if not.
    rules = dict(_map(CONF, "logged_path"))
    assert rules.pop("default") == f'"{gateway.UNREADABLE_PATH}"'
    assert rules == {gateway.PERSONAL_LEFT: f'"{gateway.WITHHELD_PATH}"', gateway.UTF8_PATH: source}
    if _mapped(path, gateway.PERSONAL_LEFT, '"left"') == "left":
        return gateway.WITHHELD_PATH
    return path


def _map_chain(source: str, last: str) -> list[str]:
    """The variables the maps from ``source`` set, one from another, up to ``last``'s."""
    chain: list[str] = []
    while (found := re.search(rf"^map \{source} \$(\w+) {{", CONF, re.M)) is not None:
        if found.group(1) == last:
            return chain
        chain.append(found.group(1))
        source = f"${found.group(1)}"
    raise AssertionError(f"no map from {source} leads to ${last}")


def _mapped(path: str, pattern: str, value: str) -> str:
    rule = re.fullmatch(r'"~(\*?)(.*)"', pattern)
    assert rule is not None, pattern
    flags, regex = rule.groups()
    named = re.sub(r"\(\?<(?=\w)", "(?P<", regex)  # PCRE's named groups; not (?<! or (?<=
    found = re.search(named, path, re.I if flags else 0)
    if found is None:
        return path
    return re.sub(r"\$\{(\w+)\}", lambda m: found.group(m.group(1)), value.strip('"'))


ID = "0b7e2f4a-3c1d-4e5f-8a9b-1c2d3e4f5a6b"


@pytest.mark.parametrize(
    ("path", "logged"),
    [
        (f"/api/accounts/operator/users/{ID}", "/api/accounts/operator/users/{id}"),
        (f"/api/accounts/me/devices/{ID.upper()}", "/api/accounts/me/devices/{id}"),
        (f"/a/{ID}/b/{ID}/c/{ID}", "/a/{id}/b/{id}/c/{id}"),
        (f"/api/notifier/unsubscribe/{ID}", "/api/notifier/unsubscribe/{token}"),
        ("/api/notifier/inbox/12345/read", "/api/notifier/inbox/{id}/read"),
        ("/api/notifier/inbox/12345", "/api/notifier/inbox/{id}"),
        ("/assets/v2/site.css", "/assets/v2/site.css"),
        ("/api/accounts/me", "/api/accounts/me"),
    ],
)
def test_the_access_log_names_no_one_by_id(path: str, logged: str) -> None:
    assert _logged(path) == logged


@pytest.mark.promise("P-09")
@pytest.mark.parametrize(
    ("path", "logged"),
    [
        ("/api/accounts/me/devices/4111-1111-1111-1111", "/api/accounts/me/devices/{id}"),
        ("/api/accounts/me/devices/4111111111111111/x", "/api/accounts/me/devices/{id}/x"),
        ("/api/accounts/me/devices/jane@example.com", "/api/accounts/me/devices/{id}"),
        ("/a/+1 (555) 123-4567/b", "/a/{id}/b"),
        ("/x/1990-01-01", "/x/{id}"),
        (f"/a/{ID}/b/jane@example.com/c/12", "/a/{id}/b/{id}/c/{id}"),
        ("/1@x/2@x/3@x", "/{id}/{id}/{id}"),
        ("/1@x/2@x/3@x/4@x", gateway.WITHHELD_PATH),  # more than the maps replace
        ("/x/4111/1111/1111/1111", gateway.WITHHELD_PATH),  # a card split across segments
        ("/x/411/111/11/1111", gateway.WITHHELD_PATH),
        ("/assets/site.css", "/assets/site.css"),
        ("/api/analytics/v1234/x", "/api/analytics/v1234/x"),  # four digits
    ],
)
def test_the_access_log_keeps_no_address_or_number_a_caller_put_in_a_path(
    path: str, logged: str
) -> None:
    assert _logged(path) == logged


def _request_id(given: str) -> str:
    """$imt_request_id for a caller's X-Request-Id: the first rule that matches."""
    for pattern, value in _map(CONF, "imt_request_id"):
        if pattern != "default" and _mapped(given, pattern, '"hit"') == "hit":
            return value
    return dict(_map(CONF, "imt_request_id"))["default"]


@pytest.mark.promise("P-09")
@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("4111111111111111", False),
        ("4111-1111-1111-1111", False),
        ("order-4111111111111111", False),
        ("4111111111111111.retry", False),
        ("log-check-0b7e2f4a3c1d4e5f8a9b1c2d3e4f5a6b", True),
        ("0b7e2f4a-3c1d-4e5f-8a9b-1c2d3e4f5a6b", True),
        ("card4111111111111111", False),
        ("4111111111111111abc", False),
        ("4111--1111--1111--1111", False),
        ("41111111111111110001", False),
        ("req-123456789012", True),  # twelve digits: no card
        ("x y", False),  # not the id's form
    ],
)
def test_a_request_id_like_a_card_number_is_not_kept(given: str, kept: bool) -> None:
    assert _request_id(given) == ("$http_x_request_id" if kept else "$request_id")


TOKEN = "AQMx" + "a" * 40 + "_-Z9"


@pytest.mark.parametrize(
    ("path", "logged"),
    [
        (f"/api/notifier/unsubscribe/{TOKEN}", "/api/notifier/unsubscribe/{token}"),
        (f"/API/Notifier/Unsubscribe/{TOKEN}/x", "/API/Notifier/Unsubscribe/{token}"),
        (f"/unsubscribe/{TOKEN}/unsubscribe/{TOKEN}", "/unsubscribe/{token}"),
        ("/api/notifier/inbox", "/api/notifier/inbox"),
        ("/privacy.html", "/privacy.html"),
    ],
)
def test_the_access_log_never_records_an_unsubscribe_token(path: str, logged: str) -> None:
    assert '"path":"$logged_path"' in CONF
    assert "$uri" not in CONF.split("log_format", 1)[1].split(";", 1)[0]
    assert _logged(path) == logged


# A token as the platform mails it (secrets.token_urlsafe(32)), with fewer than five
# digits: no rule for numbers catches it.
FEW_DIGITS = "Qm_xRtYvNbKjHgFdSaPoIuYtReWqLkJhGfDsAzXcVb9"


@pytest.mark.parametrize(
    ("path", "logged"),
    [
        # A mailed link whose "#" a link rewriter encoded: nginx decodes it, answers 404.
        (f"/reset-password#token={FEW_DIGITS}", "/reset-password#{token}"),
        (f"/verify-email?token={FEW_DIGITS}", "/verify-email?{token}"),
        (f"/deletion-status.html#{FEW_DIGITS}/x", "/deletion-status.html#{token}"),
        (f"/api/deletion/status/{FEW_DIGITS}", "/api/deletion/status/{token}"),
        (f"/x/{FEW_DIGITS}.html", "/x/{token}.html"),
        (f"/a/{FEW_DIGITS}/b/{FEW_DIGITS}", gateway.WITHHELD_PATH),  # more than one
        # The routes' and pages' own names are kept.
        ("/api/accounts/deletion-cancellations", "/api/accounts/deletion-cancellations"),
        (f"/api/accounts/me/deletion-requests/{ID}/cancel",
         "/api/accounts/me/deletion-requests/{id}/cancel"),
        ("/reset-password.html", "/reset-password.html"),
        ("/api/notifier/ops/policy-versions/2024-06-01", "/api/notifier/ops/policy-versions/{id}"),
    ],
)  # fmt: skip
def test_the_access_log_never_records_a_mailed_links_token(path: str, logged: str) -> None:
    assert _logged(path) == logged


def test_no_mailed_token_reaches_the_access_log_however_few_digits_it_has() -> None:
    for _ in range(2000):
        token = secrets.token_urlsafe(32)
        for path in (f"/reset-password#token={token}", f"/verify-email/{token}"):
            assert token not in _logged(path), path


def test_one_address_cannot_hold_every_connection_with_streams() -> None:
    stream = _locations(SITE)[f"location = {gateway.INBOX_STREAM} "]
    assert f"limit_conn streams_per_client {gateway.STREAMS_PER_CLIENT};" in stream
    assert "proxy_pass http://svc_notifier;" in stream
    assert "proxy_buffering off;" in stream
    assert "limit_conn_zone $binary_remote_addr zone=streams_per_client:10m;" in CONF
    assert "limit_conn_status 429;" in CONF
    assert "events { worker_connections 4096; }" in CONF
    assert gateway.STREAMS_PER_CLIENT * 100 < gateway.WORKER_CONNECTIONS


def _conf_for(public_host: str) -> str:
    place = dataclasses.replace(compose.gateway_placement(), public_host=public_host)
    files, _ = gateway.render_files(place)
    return files["nginx.conf"]


@pytest.mark.parametrize("host", ["localhost", "LOCALHOST", "127.0.0.1", "::1", "[::1]"])
def test_no_hsts_is_pinned_on_this_machine_and_an_old_pin_is_cleared(host: str) -> None:
    # A year of HSTS on localhost would force https on every local tool's port.
    conf = _conf_for(host)
    assert dict(_map(conf, "imt_hsts"))["https"] == '"max-age=0"'
    assert f"server_name {host};" in conf


def test_a_public_host_gets_a_year_of_hsts_on_https() -> None:
    conf = _conf_for("privacy.example.org")
    assert dict(_map(conf, "imt_hsts")) == {"default": '""', "https": '"max-age=31536000"'}
    assert conf.count("server_name privacy.example.org;") == 2


def _regex_locations() -> list[tuple[str, str]]:
    """(pattern, body) of the regex locations, in the order nginx tries them."""
    found = []
    for line, body in _locations(SITE).items():
        rule = re.fullmatch(r"location ~ (\S+) ", line)
        if rule:
            found.append((rule.group(1).replace("(?<", "(?P<"), body))
    return found


def _first_regex_for(path: str) -> str | None:
    # nginx tries regex locations in order; the first match wins (PCRE and re agree here).
    return next((body for pattern, body in _regex_locations() if re.search(pattern, path)), None)


@pytest.mark.parametrize(
    "path",
    [
        "/api/accounts/readyz",
        "/api/notifier/healthz",
        "/api/deletion/readyz/",
        "/api/analytics//healthz",
    ],
)
def test_service_readiness_is_not_public(path: str) -> None:
    body = _first_regex_for(path)
    assert body is not None
    assert "proxy_pass" not in body
    assert "return 404;" in body
    assert "error_page 404 = @not_found;" in body  # the JSON problem body


@pytest.mark.parametrize(
    "path",
    [
        "/api/accounts/openapi.json",  # the README's way to the (public) spec
        "/api/accounts/readyz-report",
        "/api/notifier/me/healthz-settings",
    ],
)
def test_other_service_paths_still_reach_the_service(path: str) -> None:
    body = _first_regex_for(path)
    assert body is not None
    assert "proxy_pass http://svc_$imt_service;" in body


def test_only_the_live_inbox_streams_unbuffered_for_long() -> None:
    proxied = {line: body for line, body in _locations(SITE).items() if "proxy_pass" in body}
    stream = proxied.pop(f"location = {gateway.INBOX_STREAM} ")
    assert "proxy_buffering off;" in stream
    assert "proxy_read_timeout 1h;" in stream
    for path in gateway.LONG_CHECKS.values():  # buffered, minutes: the test below
        proxied.pop(f"location ~ ^{path}/?$ ")
    assert len(proxied) >= 2
    for line, body in proxied.items():
        assert "proxy_buffering off" not in body, line
        assert re.findall(r"proxy_read_timeout (\S+);", body) == ["30s"], line


def test_operators_whole_store_checks_get_minutes_and_other_calls_seconds() -> None:
    locations = _locations(SITE)
    order = list(locations)
    service = next(line for line in order if "(?<imt_service>" in line)
    for path in gateway.LONG_CHECKS.values():
        [line] = [x for x in order if x.startswith(f"location ~ ^{path}")]
        assert f"proxy_read_timeout {gateway.LONG_CHECK_TIMEOUT};" in locations[line]
        assert order.index(line) < order.index(service)  # regexes: the first match wins
        found = re.search(line.split()[2], path.replace("[^/]+", "some-id"))
        assert found is not None
    assert f"proxy_read_timeout {gateway.API_READ_TIMEOUT};" in locations[service]


@pytest.mark.parametrize(
    "path",
    [
        "/api/accounts/operator/stats",
        "/api/accounts/operator",
        "/api/accounts//operator/users/search",
        "/api/accounts/operator/audit/verify",  # a long check: a location of its own
        "/api/deletion/operator/requests/some-id/verify",
        "/api/deletion/operator/pipeline",
        "/api/notifier/ops/suppressions",
        "/api/analytics/trends",
        "/api/analytics/trends/partner",
        "/api/analytics//suppressed",
    ],
)
def test_operators_endpoints_answer_only_operators_networks(path: str) -> None:
    body = _first_regex_for(path)
    assert body is not None
    assert "proxy_pass" in body
    networks = re.findall(r"^\s+allow (\S+);$", body, re.M)
    assert networks == list(compose.gateway_placement().operator_networks)
    assert body.index("deny all;") > max(body.index(f"allow {n};") for n in networks)
    assert "error_page 403 = @not_found;" in body  # refused as nothing there, in JSON


@pytest.mark.parametrize("service", sorted(gateway.UPSTREAMS))
def test_every_route_that_needs_an_operators_role_is_for_operators_networks_only(
    service: str,
) -> None:
    """Read from each API as built: a role-protected route added later outside the
    operator locations fails here."""
    routes = operator_routes(service)
    assert routes
    for _method, template in routes:
        path = re.sub(r"\{[^}]+\}", "some-id", template)
        body = _first_regex_for(path)
        assert body is not None, path
        assert "deny all;" in body, path


@pytest.mark.parametrize(
    "path",
    [
        "/api/accounts/me",
        "/api/accounts/operators-guide",
        "/api/notifier/opsx",
        "/api/analytics/trends/public",
        "/api/analytics/beacon",
    ],
)
def test_users_paths_are_open_to_every_network(path: str) -> None:
    body = _first_regex_for(path)
    assert body is not None
    assert "proxy_pass" in body
    assert "deny all;" not in body


def test_operators_networks_come_from_the_setting_and_a_bad_one_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("IMT_GATEWAY_OPERATOR_NETWORKS", raising=False)
    assert gateway.operator_networks() == ("127.0.0.1", "::1")
    monkeypatch.setenv("IMT_GATEWAY_OPERATOR_NETWORKS", " 10.1.0.0/16 , fd00::/8 ")
    assert gateway.operator_networks() == ("10.1.0.0/16", "fd00::/8")
    placed = dataclasses.replace(
        compose.gateway_placement(), operator_networks=gateway.operator_networks()
    )
    site = gateway.render_site(placed)
    assert "    allow 10.1.0.0/16;\n    allow fd00::/8;\n    deny all;\n" in site
    monkeypatch.setenv("IMT_GATEWAY_OPERATOR_NETWORKS", "10.1.0.0/16,office")
    with pytest.raises(gateway.UnusableNetwork, match="'office'"):
        gateway.operator_networks()


def test_no_proxied_answer_is_spooled_to_a_temporary_file() -> None:
    """Answers hold personal data in the clear: a buffered one larger than the buffers is
    passed on as it comes, never written to disk (nor are request bodies)."""
    proxied = {line: body for line, body in _locations(SITE).items() if "proxy_pass" in body}
    assert len(proxied) >= 5
    # nginx buffers a proxied answer unless told not to, and spools what overflows the
    # buffers to proxy_temp_path: every proxied location either streams or never spools.
    unbuffered = re.compile(r"^\s*proxy_buffering off;$", re.M)
    no_spool = re.compile(r"^\s*proxy_max_temp_file_size 0;$", re.M)
    for line, body in proxied.items():
        assert unbuffered.search(body) or no_spool.search(body), line
    assert "client_body_buffer_size 64k;" in CONF
    assert "client_max_body_size 64k;" in CONF
    for line, body in proxied.items():  # a larger body, where one is taken, in memory too
        sizes = re.findall(r"^\s+client_(max_body|body_buffer)_size (\S+);$", body, re.M)
        assert len({size for _, size in sizes}) <= 1, line


def _bytes(size: str) -> int:
    """An nginx size ("64k", "1m") in bytes."""
    units = {"k": 1024, "m": 1024 * 1024}
    return int(size[:-1]) * units[size[-1]] if size[-1] in units else int(size)


def _body_limit(path: str) -> int:
    """The largest body the gateway passes on for ``path``: its location's own limit, or
    the server's."""
    body = _first_regex_for(path)
    assert body is not None, path
    found = re.search(r"^\s+client_max_body_size (\S+);$", body, re.M)
    default = re.search(r"^client_max_body_size (\S+);$", CONF, re.M)
    assert default is not None
    return _bytes((found or default).group(1))


@pytest.mark.parametrize("service", sorted(gateway.UPSTREAMS))
def test_every_routes_largest_valid_body_passes_the_gateway(service: str) -> None:
    """Read from each API as built: a route whose limits grow past its location's body
    limit fails here (an incident's 20,000 users were refused at 1,700)."""
    document = openapi_documents()[service]
    sized = 0
    for method, template, size in largest_bodies(document):
        if size is None:  # no bound of its own: the gateway's is the route's limit
            continue
        path = re.sub(r"\{[^}]+\}", "some-id", template)
        assert size <= _body_limit(path), (method, template, size)
        sized += 1
    assert sized or service in ("analytics", "deletion")


@pytest.mark.parametrize(
    ("path", "at_least"),
    [
        ("/api/accounts/operator/incidents", 800_000),  # 20,000 ids
        ("/api/notifier/ops/dead-letters/replay", 200_000),  # 10,000 ids
    ],
)
def test_operators_bulk_calls_take_more_than_other_routes(path: str, at_least: int) -> None:
    assert _body_limit(path) >= at_least
    assert _body_limit("/api/accounts/operator/announcements") == 64 * 1024
    assert _body_limit("/api/accounts/me/requests") == 64 * 1024


def _client_network(address: str) -> str:
    """$imt_client_network as nginx's map computes it: the first matching regex, its
    value's $names replaced by the named groups; else the default."""
    entries = _map(CONF, "imt_client_network")
    for pattern, value in entries:
        if not pattern.startswith('"~'):
            continue
        match = re.search(pattern.strip('"')[1:].replace("(?<", "(?P<"), address)
        if match:
            groups = match.groupdict()
            return "".join(groups.get(part, part) for part in re.split(r"\$(\w+)", value))
    return dict(entries)["default"].replace("$remote_addr", address)


# /48s nginx writes compressed: zero second or third groups, or leading zero groups.
EDGE_NETWORKS = [0x2A02_8070_0000, 0x2A02_0000_0000, 0x5, 0x1_0000, 0]


@pytest.mark.promise("P-20")
@given(
    network=st.integers(0, 2**48 - 1) | st.sampled_from(EDGE_NETWORKS),
    hosts=st.lists(st.integers(0, 2**80 - 1) | st.integers(0, 2**16), min_size=2, max_size=2),
)
def test_one_ipv6_network_goes_to_one_analytics_replica(network: int, hosts: list[int]) -> None:
    """Each replica salts visitors its own way: a /48 whose addresses nginx writes
    compressed ("2a02:8070::1") must still go to one replica, or k counts it twice."""
    keys = {_client_network(str(ipaddress.IPv6Address((network << 80) | host))) for host in hosts}
    assert len(keys) == 1, keys


@pytest.mark.parametrize("address", ["198.51.100.7", "198.51.100.250", "::ffff:198.51.100.9"])
def test_one_ipv4_network_goes_to_one_analytics_replica(address: str) -> None:
    assert _client_network(address) == "198.51.100"
    assert visitor.truncate_ip(address) == "198.51.100.0"
