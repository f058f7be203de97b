"""JSON log lines carry no personal data, whatever the developer passed to the logger."""

from __future__ import annotations

import dataclasses
import io
import json
import logging
from collections.abc import Callable

import pytest
from pydantic import BaseModel, Field, ValidationError

from shared.observability import configure_logging, trace_id_var
from shared.observability.logs import is_denied_field
from tests.unit.observability.conftest import LogLines

EMAIL = "jane.doe@example.com"
CARD = "4111 1111 1111 1111"
IP = "203.0.113.7"
PASSWORD = "hunter2-secret"

log = logging.getLogger("services.accounts.test")


def _imt_handlers() -> list[logging.Handler]:
    return [h for h in logging.getLogger().handlers if h.get_name() == "imt-json"]


@pytest.mark.promise("P-01")
def test_plaintext_password_and_personal_data_never_reach_a_log_line(
    log_stream: io.StringIO, log_lines: LogLines
) -> None:
    log.info(
        "sign-up by %s paying with %s from %s",
        EMAIL,
        CARD,
        IP,
        extra={"password": PASSWORD, "user_password": PASSWORD, "attempt": 2},
    )

    raw = log_stream.getvalue()
    for value in (EMAIL, CARD, "4111111111111111", IP, PASSWORD):
        assert value not in raw
    [line] = log_lines()
    assert line["message"] == (
        "sign-up by [REDACTED:email] paying with [REDACTED:card] from [REDACTED:ipv4]"
    )
    assert line["password"] == "[REDACTED]"
    assert line["user_password"] == "[REDACTED]"
    assert line["attempt"] == 2
    assert line["level"] == "INFO"
    assert line["service"] == "accounts"
    assert line["logger"] == "services.accounts.test"
    assert str(line["time"]).endswith("Z")


def test_extra_string_fields_are_redacted_and_denied_names_replaced(log_lines: LogLines) -> None:
    log.warning(
        "lookup",
        extra={
            "note": f"contact {EMAIL} or +1 415 555 0100",
            "emailAddress": "anything at all",
            "client_ip": "not even an ip",
            "request": {"headers": {"Authorization": "Basic abc"}, "path": f"/u/{EMAIL}"},
            "card_as_int": 4111111111111111,
            "recipient_count": 3,
        },
    )

    [line] = log_lines()
    assert line["note"] == "contact [REDACTED:email] or [REDACTED:phone]"
    assert line["emailAddress"] == "[REDACTED]"
    assert line["client_ip"] == "[REDACTED]"
    assert line["request"] == {
        "headers": {"Authorization": "[REDACTED]"},
        "path": "/u/[REDACTED:email]",
    }
    assert line["card_as_int"] == "[REDACTED:card]"
    assert line["recipient_count"] == 3


def test_exception_message_is_redacted_in_the_traceback(
    log_stream: io.StringIO, log_lines: LogLines
) -> None:
    try:
        raise ValueError(f"no account for {EMAIL} (card {CARD})")
    except ValueError:
        log.exception("sign-in failed")

    assert EMAIL not in log_stream.getvalue()
    assert CARD not in log_stream.getvalue()
    [line] = log_lines()
    assert line["level"] == "ERROR"
    assert line["exc_type"] == "ValueError"
    traceback = str(line["traceback"])
    assert traceback.startswith("Traceback (most recent call last):")
    assert "ValueError: no account for [REDACTED:email] (card [REDACTED:card])" in traceback


@pytest.mark.promise("P-01")
def test_mappings_and_models_passed_as_arguments_are_cleaned_field_by_field(
    log_stream: io.StringIO, log_lines: LogLines
) -> None:
    class Body(BaseModel):
        password: str
        attempts: int

    log.warning("body %s", {"password": PASSWORD, "name": "Jane Doe", "attempts": 3})
    log.warning("model %s", Body(password=PASSWORD, attempts=1))
    log.warning("%(password)s and %(attempts)s", {"password": PASSWORD, "attempts": 2})

    raw = log_stream.getvalue()
    assert PASSWORD not in raw
    assert "Jane Doe" not in raw
    messages = [line["message"] for line in log_lines()]
    assert messages == [
        "body {'password': '[REDACTED]', 'name': '[REDACTED]', 'attempts': 3}",
        "model {'password': '[REDACTED]', 'attempts': 1}",
        "[REDACTED] and 2",
    ]


@pytest.mark.promise("P-01")
def test_validation_errors_lose_the_values_they_quote(
    log_stream: io.StringIO, log_lines: LogLines
) -> None:
    class Body(BaseModel):
        attempts: int

    try:
        Body(attempts=PASSWORD)
    except ValidationError:
        log.exception("refused")

    assert PASSWORD not in log_stream.getvalue()
    [line] = log_lines()
    assert "input_value=[REDACTED]" in str(line["traceback"])


def test_records_seen_by_later_handlers_are_redacted_too(
    log_lines: LogLines, caplog: pytest.LogCaptureFixture
) -> None:
    log.info("hello %s", EMAIL)

    assert EMAIL not in caplog.text
    assert "[REDACTED:email]" in caplog.text


def test_uvicorn_access_lines_go_through_the_json_handler(log_lines: LogLines) -> None:
    access = logging.getLogger("uvicorn.access")
    access.info('%s - "%s %s HTTP/%s" %d', f"{IP}:50312", "GET", f"/users/{EMAIL}", "1.1", 200)

    [line] = log_lines()
    assert line["logger"] == "uvicorn.access"
    assert line["message"] == '[REDACTED:ipv4]:50312 - "GET /users/[REDACTED:email] HTTP/1.1" 200'


def test_trace_id_comes_from_the_context(log_lines: LogLines) -> None:
    token = trace_id_var.set("4bf92f3577b34da6a3ce929d0e0e4736")
    try:
        log.info("traced")
    finally:
        trace_id_var.reset(token)
    log.info("untraced")

    traced, untraced = log_lines()
    assert traced["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert "trace_id" not in untraced


def test_extra_named_like_a_core_field_does_not_replace_it(log_lines: LogLines) -> None:
    log.info("core", extra={"service": "spoofed", "level": "none"})

    [line] = log_lines()
    assert line["service"] == "accounts"
    assert line["extra_service"] == "spoofed"
    assert line["level"] == "INFO"


def test_configuring_twice_keeps_one_handler(
    restore_logging: None, log_stream: io.StringIO
) -> None:
    configure_logging("accounts", "INFO")
    configure_logging("accounts-v2", "WARNING")

    assert len(_imt_handlers()) == 1
    assert logging.getLogger().level == logging.WARNING
    log.warning("once")
    lines = [json.loads(line) for line in log_stream.getvalue().splitlines()]
    assert [(line["service"], line["message"]) for line in lines] == [("accounts-v2", "once")]


def test_console_handlers_of_others_are_replaced(restore_logging: None) -> None:
    import sys

    root = logging.getLogger()
    root.addHandler(logging.StreamHandler(sys.stderr))
    uvicorn_handler = logging.StreamHandler(sys.stdout)
    logging.getLogger("uvicorn.access").addHandler(uvicorn_handler)
    logging.getLogger("uvicorn.access").propagate = False

    configure_logging("accounts")

    console = [h for h in root.handlers if type(h) is logging.StreamHandler]
    assert console == []
    assert len(_imt_handlers()) == 1
    assert logging.getLogger("uvicorn.access").handlers == []
    assert logging.getLogger("uvicorn.access").propagate is True


@pytest.mark.parametrize(
    ("name", "denied"),
    [
        ("password", True),
        ("user_email", True),
        ("accessToken", True),
        ("client_ip", True),
        ("Set-Cookie", True),
        ("username", True),
        ("home_address", True),
        ("input", True),  # pydantic's name for the value it refused, in e.errors()
        ("recipient", False),
        ("zip", False),
        ("topic", False),
        ("event_id", False),
    ],
)
def test_denied_field_names(name: str, denied: bool) -> None:
    assert is_denied_field(name) is denied


def test_a_trace_id_of_ours_is_logged_as_is_even_when_it_passes_for_a_card(
    log_lines: LogLines,
) -> None:
    # Random hex (the gateway's id) may hold a Luhn-valid run; the log must match it.
    ours = "abcd4111111111111111abcdabcdabcd"
    for trace_id in (ours, "req-4111111111111111"):
        token = trace_id_var.set(trace_id)
        try:
            log.info("traced")
        finally:
            trace_id_var.reset(token)

    kept, foreign = log_lines()
    assert kept["trace_id"] == ours
    assert foreign["trace_id"] == "req-[REDACTED:card]"


class _Login(BaseModel):
    email: str
    password: str = Field(min_length=20)  # PASSWORD is shorter: refused, and quoted


@dataclasses.dataclass
class _Attempt:
    login: _Login
    password: str
    tries: int


def _login() -> _Login:
    return _Login.model_construct(email=EMAIL, password=PASSWORD)


@pytest.mark.promise("P-01")
@pytest.mark.parametrize(
    "emit",
    [
        pytest.param(lambda: log.info({"password": PASSWORD}), id="dict-as-message"),
        pytest.param(lambda: log.info("x", extra={"body": _login()}), id="model-in-extra"),
        pytest.param(lambda: log.info("x %s", [_login()]), id="model-in-list-arg"),
        pytest.param(lambda: log.info("x %s", _Attempt(_login(), PASSWORD, 1)), id="dataclass"),
        pytest.param(
            lambda: log.info("x", extra={"rows": ({"nested": [_login()]},)}), id="deep-in-extra"
        ),
    ],
)
def test_models_dataclasses_and_mappings_are_cleaned_wherever_they_appear(
    emit: Callable[[], None], log_stream: io.StringIO
) -> None:
    emit()

    raw = log_stream.getvalue()
    assert PASSWORD not in raw
    assert EMAIL not in raw
    assert "[REDACTED]" in raw


def test_a_dataclass_argument_keeps_its_harmless_fields(log_lines: LogLines) -> None:
    log.info("attempt %s", _Attempt(_login(), PASSWORD, 3))

    [line] = log_lines()
    assert line["message"] == (
        "attempt {'login': {'email': '[REDACTED]', 'password': '[REDACTED]'}, "
        "'password': '[REDACTED]', 'tries': 3}"
    )


@pytest.mark.promise("P-01")
def test_mapping_keys_and_extra_names_are_redacted(
    log_stream: io.StringIO, log_lines: LogLines
) -> None:
    log.info("counts", extra={"by_user": {EMAIL: 1}})
    log.info("count", extra={EMAIL: 2})

    assert EMAIL not in log_stream.getvalue()
    nested, top = log_lines()
    assert nested["by_user"] == {"[REDACTED:email]": 1}
    assert top["[REDACTED:email]"] == 2


def _validation_error() -> ValidationError:
    try:
        _Login(email="not-an-address", password=PASSWORD)
    except ValidationError as exc:
        return exc
    raise AssertionError("the password is too short to pass")


@pytest.mark.promise("P-01")
@pytest.mark.parametrize(
    "emit",
    [
        pytest.param(lambda e: log.info(f"refused {e}"), id="f-string"),
        pytest.param(lambda e: log.info("refused %s", str(e)), id="str-argument"),
        pytest.param(lambda e: log.info("refused", extra={"error": e}), id="error-in-extra"),
        pytest.param(lambda e: log.info("refused", extra={"why": str(e)}), id="text-in-extra"),
        pytest.param(lambda e: log.info("refused", extra={"detail": e.errors()}), id="errors"),
        pytest.param(lambda e: log.info(f"refused {e.errors()}"), id="errors-as-text"),
        pytest.param(lambda e: log.info("refused %s", e.json()), id="json"),
    ],
)
def test_values_quoted_by_validation_errors_never_reach_a_log_line(
    emit: Callable[[ValidationError], None], log_stream: io.StringIO
) -> None:
    emit(_validation_error())

    raw = log_stream.getvalue()
    assert PASSWORD not in raw
    assert "[REDACTED]" in raw
    assert "string_too_short" in raw  # what was wrong is kept, only the value goes


@pytest.mark.promise("P-01")
def test_a_quoted_dict_input_is_hidden_whole(log_stream: io.StringIO) -> None:
    error = ValidationError.from_exception_data(
        "Body",
        [{"type": "string_type", "loc": ("a",), "input": {"n": 1, "password": PASSWORD}}],
    )
    log.info("refused %s", str(error))
    try:
        raise error
    except ValidationError:
        log.exception("refused")

    raw = log_stream.getvalue()
    assert PASSWORD not in raw
    assert "input_value=[REDACTED], input_type=dict" in raw


@pytest.mark.promise("P-01")
def test_values_quoted_by_postgresql_and_asyncpg_are_dropped(log_lines: LogLines) -> None:
    log.warning("insert failed: invalid input for query argument $1: 'Jane Roe' (bad)")
    log.warning('cast failed: invalid input syntax for type uuid: "Jane Roe"')

    assert [line["message"] for line in log_lines()] == [
        "insert failed: invalid input for query argument $1: [REDACTED]",
        "cast failed: invalid input syntax for type uuid: [REDACTED]",
    ]


def test_a_structure_pointing_back_to_itself_does_not_break_logging(
    log_lines: LogLines,
) -> None:
    @dataclasses.dataclass
    class Node:
        label: str
        parent: object = None

    node = Node("root")
    node.parent = node
    log.info("tree %s", node)

    [line] = log_lines()
    assert line["message"] == "tree {'label': 'root', 'parent': '[REDACTED]'}"


def test_a_structure_sharing_its_parts_is_looked_at_in_bounded_time(
    log_stream: io.StringIO,
) -> None:
    """Two references to one part at each of 18 levels: 2**18 paths. Each value met is
    counted, and the line stops growing at the budget."""
    shared: dict[str, object] = {"leaf": EMAIL}
    for _ in range(18):
        shared = {"a": shared, "b": shared}
    looped: dict[str, object] = {}
    looped["a"] = looped
    looped["b"] = looped

    log.info("deep %s and looped %s", shared, looped)

    raw = log_stream.getvalue()
    assert EMAIL not in raw
    assert len(raw) < 1_000_000  # ~10,000 values at most, not 2**18 leaves (~8 MB)
    assert "[REDACTED]" in raw


def test_a_dataclass_field_not_set_yet_does_not_break_logging(log_lines: LogLines) -> None:
    @dataclasses.dataclass
    class Lazy:
        label: str
        later: str = dataclasses.field(init=False)

    log.info("lazy %s", Lazy("x"))

    [line] = log_lines()
    assert line["message"] == "lazy {'label': 'x', 'later': None}"
