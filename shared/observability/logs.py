"""JSON logs on stderr, one object per line, with personal data removed before formatting.

Every process calls :func:`configure_logging` once at start-up. Redaction happens in a
filter on the handler rather than at call sites: a developer who logs an email or a
password by mistake must not be the last line of defence (promises P-01 and P-09).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import sys
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import TextIO

from pydantic import BaseModel

from shared.pii import PiiKind, redact
from shared.tracing import is_trace_id, trace_id_var

REDACTED = "[REDACTED]"

DENIED_FIELD_NAMES: frozenset[str] = frozenset(
    {
        "password",
        "passwd",
        "pwd",
        "passphrase",
        "token",
        "secret",
        "authorization",
        "cookie",
        "credential",
        "credentials",
        "email",
        "name",
        "phone",
        "address",
        "ip",
        # Single-word spellings that splitting on "_" or camelCase cannot separate.
        "username",
        "firstname",
        "lastname",
        "fullname",
        "surname",
        "apikey",
        # What pydantic calls the value it refused, in ``e.errors()``: the raw input.
        "input",
        "input_value",
    }
)

THIRD_PARTY_LOGGERS = ("uvicorn", "uvicorn.access", "uvicorn.error", "aiokafka", "faust")

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", logging.INFO, "", 0, "", (), None))) | {
    "message",
    "asctime",
    "taskName",
}
# Uvicorn repeats its message with ANSI colours under this name: noise in JSON.
_DROPPED_EXTRAS = frozenset({"color_message"})
_CORE_FIELDS = frozenset(
    {"time", "level", "service", "logger", "message", "trace_id", "exc_type", "traceback", "stack"}
)
# Trace ids look like tokens to the detector (32 hex digits); they are ours, not secrets,
# but one taken from a request header could still carry an email or a card number.
_TRACE_ID_KINDS = frozenset(kind for kind in PiiKind if kind is not PiiKind.TOKEN)
_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_NON_WORD = re.compile(r"[^a-z0-9]+")
_MAX_DEPTH = 32  # deeper than any payload we log
_MAX_NODES = 10_000  # values looked at per record, however they are shared
_HANDLER_NAME = "imt-json"
_REDACTED_MARK = "_imt_redacted"
_plain_formatter = logging.Formatter()


def is_denied_field(name: str, denied: frozenset[str] = DENIED_FIELD_NAMES) -> bool:
    """Whether a field called ``name`` is assumed to hold personal or secret data.

    Names are split into words so that ``user_email``, ``accessToken`` and ``client_ip``
    are caught, while ``recipient`` or ``zip`` (which merely contain "ip") are not.
    """
    lowered = _CAMEL_BOUNDARY.sub("_", name).lower()
    return lowered in denied or any(word in denied for word in _NON_WORD.split(lowered))


class PersonalDataFilter(logging.Filter):
    """Rewrites a record in place so that no personal data leaves the process in a log line.

    Attached to the handler, not to loggers: logger filters do not see records that
    propagate from child loggers, handler filters see every record the handler writes.
    The record is mutated (never dropped), so handlers after ours see the redacted text.
    """

    def __init__(self, denied_fields: Iterable[str] = DENIED_FIELD_NAMES) -> None:
        super().__init__()
        self.denied_fields = frozenset(name.lower() for name in denied_fields)

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, _REDACTED_MARK, False):
            return True
        # Mappings and models among the arguments (or as the message) are cleaned field by
        # field first, as ``extra`` is: "%s" of {"password": ...} would otherwise only be
        # pattern-matched, and a password matches no pattern.
        record.msg = self._clean_arg(record.msg)
        record.args = self._clean_args(record.args)
        # The message may embed an error's text itself (f"{e}", str(e)): scrubbed whole.
        record.msg = scrub(_message_of(record))
        record.args = ()
        for key, value in list(vars(record).items()):
            if key in _RECORD_ATTRIBUTES or key.startswith("_"):
                continue
            if key in _DROPPED_EXTRAS:
                delattr(record, key)
            elif key == "trace_id":
                record.trace_id = _clean_trace_id(value)
            else:
                # The name is written too: extra={email: n} would print the address.
                name = redact(key)
                if name != key:
                    delattr(record, key)
                setattr(record, name, self._clean_field(key, value))
        if not hasattr(record, "trace_id"):
            current = trace_id_var.get()
            if current is not None:
                record.trace_id = _clean_trace_id(current)
        if record.exc_info:
            # Exception messages are where personal data hides most often:
            # ``ValueError(f"no user {email}")``. Format once here, redact, and let
            # every formatter reuse the cached text instead of the raw exception.
            text = record.exc_text or _plain_formatter.formatException(record.exc_info)
            record.exc_text = scrub(text)
        elif record.exc_text:
            record.exc_text = scrub(record.exc_text)
        if record.stack_info:
            record.stack_info = scrub(record.stack_info)
        setattr(record, _REDACTED_MARK, True)
        return True

    def _clean_args(
        self, args: tuple[object, ...] | Mapping[str, object] | None
    ) -> tuple[object, ...] | Mapping[str, object] | None:
        if isinstance(args, Mapping):
            return {str(k): self._clean_field(str(k), v) for k, v in args.items()}
        if isinstance(args, tuple):
            return tuple(self._clean_arg(arg) for arg in args)
        return args

    def _clean_arg(self, arg: object) -> object:
        # Only structures and errors: scalars must stay as they are for "%d" or "%.2f",
        # and the formatted message is scrubbed as a whole afterwards.
        if isinstance(arg, BaseException | list | tuple | set | frozenset) or _fields_of(arg):
            return self._clean_value(arg)
        return arg

    def _clean_field(self, key: str, value: object, walk: _Walk | None = None) -> object:
        if is_denied_field(key, self.denied_fields):
            return REDACTED
        return self._clean_value(value, walk)

    def _clean_value(self, value: object, walk: _Walk | None = None) -> object:
        walk = walk if walk is not None else _Walk()
        try:
            return self._clean_node(value, walk)
        except Exception:  # a filter that raises breaks the code that logged
            return REDACTED

    def _clean_node(self, value: object, walk: _Walk) -> object:
        walk.left -= 1
        if walk.left < 0 or len(walk.path) > _MAX_DEPTH:
            # Deeper or larger than anything we log: what is left is not written.
            return REDACTED
        if value is None or isinstance(value, bool | float):
            return value
        if isinstance(value, str):
            return scrub(value)
        if isinstance(value, int):
            # A card or phone number passed as an int is still a card or phone number.
            text = str(value)
            cleaned = redact(text)
            return value if cleaned == text else cleaned
        fields = _fields_of(value)
        if fields is None and not isinstance(value, list | tuple | set | frozenset):
            # Anything else (exceptions included) is written as text: scrubbed as text.
            return scrub(str(value))
        if id(value) in walk.path:  # a cycle (a child pointing back to its parent)
            return REDACTED
        walk.path.add(id(value))
        try:
            if fields is not None:
                # Keys are written too ({email: count}): redacted, denied by their own name.
                return {
                    redact(str(k)): self._clean_field(str(k), v, walk) for k, v in fields.items()
                }
            assert isinstance(value, list | tuple | set | frozenset)
            return [self._clean_value(item, walk) for item in value]
        finally:
            walk.path.discard(id(value))


class _Walk:
    """One record's walk through a structure: the containers on the way down (a cycle
    is cut where it closes) and how many values may still be looked at (shared parts
    are met once per path, so a small structure can fan out without end)."""

    __slots__ = ("left", "path")

    def __init__(self) -> None:
        self.path: set[int] = set()
        self.left = _MAX_NODES


def _fields_of(value: object) -> Mapping[object, object] | None:
    """The fields of a mapping, pydantic model or dataclass instance; ``None`` otherwise.

    Shallow on purpose: nested values are cleaned as they are reached, so nothing is
    copied twice, and no serializer runs (``model_dump`` or ``asdict`` can raise, and a
    log filter must not).
    """
    if isinstance(value, Mapping):
        return value
    if isinstance(value, BaseModel):
        return dict(value)  # declared fields, then extra ones
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        # A field declared init=False and never set has no value yet.
        return {f.name: getattr(value, f.name, None) for f in dataclasses.fields(value)}
    return None


# pydantic quotes each refused value: "input_value='hunter2!'" in a ValidationError's text,
# "'input': 'hunter2!'" in ``e.errors()`` as text ('"input":' in ``e.json()``). A value may be
# a dict with commas in it, so it runs to the field pydantic writes after it on that line,
# greedily: a value that quotes that field too is hidden whole rather than cut short.
_INPUT_VALUE = re.compile(
    r"input_value=(?:.*(?=, input_type=)|'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|[^,\]\n]*)"
)
_INPUT_ITEM = re.compile(r"""(['"])input\1:\s*(?:.*(?=,\s*['"](?:ctx|url)['"]:)|.*)""")
# PostgreSQL and asyncpg quote what they refused after this prefix: 'invalid input syntax
# for type uuid: "..."', "invalid input for query argument $1: '...' (...)".
_INVALID_INPUT = re.compile(r"(invalid input [^:\n]*:).*")


def _without_inputs(text: str) -> str:
    """``text`` without the input values pydantic, PostgreSQL and asyncpg quote in errors."""
    if "input" not in text:  # the common case, on every record: skip the patterns
        return text
    text = _INPUT_VALUE.sub("input_value=" + REDACTED, text)
    text = _INPUT_ITEM.sub(r"\1input\1: " + REDACTED, text)
    return _INVALID_INPUT.sub(r"\1 " + REDACTED, text)


def scrub(text: str) -> str:
    """``text`` safe to keep in a log line or a header: no input quoted by an error, no
    personal data that the detectors in :mod:`shared.pii` can find."""
    return redact(_without_inputs(text))


def _message_of(record: logging.LogRecord) -> str:
    try:
        return record.getMessage()
    except Exception:  # a bad format string must not lose the log line
        return f"{record.msg!s} {record.args!r}"


def _clean_trace_id(value: object) -> str:
    text = str(value)
    # One of ours (shared/tracing.py) is random hex, whose digits may pass for a card
    # number: kept as is, so the log matches the gateway's and the events' id.
    return text if is_trace_id(text) else redact(text, _TRACE_ID_KINDS)


class JsonFormatter(logging.Formatter):
    """One JSON object per record: core fields, then ``extra`` fields, then the exception."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "service": self.service,
            "logger": record.name,
            "message": record.getMessage(),
        }
        trace_id = getattr(record, "trace_id", None)
        if trace_id is not None:
            entry["trace_id"] = trace_id
        for key, value in vars(record).items():
            if key in _RECORD_ATTRIBUTES or key.startswith("_") or key == "trace_id":
                continue
            # An extra named like a core field must not overwrite it, nor be lost.
            entry[f"extra_{key}" if key in _CORE_FIELDS else key] = value
        if record.exc_info and record.exc_info[0] is not None:
            entry["exc_type"] = record.exc_info[0].__name__
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["traceback"] = record.exc_text
        if record.stack_info:
            entry["stack"] = record.stack_info
        return json.dumps(entry, ensure_ascii=False, default=_as_text)


def _as_text(value: object) -> str:
    # Only reached when the formatter runs without PersonalDataFilter: redact anyway.
    return redact(str(value))


class _JsonHandler(logging.StreamHandler[TextIO]):
    """Stream handler that looks up ``sys.stderr`` at each write unless given a stream.

    Holding on to the ``sys.stderr`` of start-up breaks when it is swapped later (test
    capture, daemonisation); the stdlib's last-resort handler does the same.
    """

    def __init__(self, stream: TextIO | None) -> None:
        self._explicit: TextIO | None = stream
        super().__init__(stream)

    @property
    def stream(self) -> TextIO:
        return self._explicit if self._explicit is not None else sys.stderr

    @stream.setter
    def stream(self, value: TextIO | None) -> None:
        self._explicit = value if value is not sys.stderr else None


def configure_logging(service: str, level: str = "INFO", *, stream: TextIO | None = None) -> None:
    """Send every log record of the process to ``stream`` (stderr) as redacted JSON.

    Idempotent: a second call reconfigures the one handler instead of adding another.
    Uvicorn must be started with ``log_config=None``, and Faust/mode replaces the root
    handlers when its worker starts: call this again afterwards in that case.
    """
    root = logging.getLogger()
    handler = next((h for h in root.handlers if h.get_name() == _HANDLER_NAME), None)
    if not isinstance(handler, _JsonHandler):
        handler = _JsonHandler(stream)
        handler.set_name(_HANDLER_NAME)
        handler.addFilter(PersonalDataFilter())
    elif stream is not None:
        handler.setStream(stream)
    handler.setFormatter(JsonFormatter(service))
    # Console handlers installed by basicConfig or frameworks would print the same
    # records in another format; ours replaces them.
    for other in list(root.handlers):
        if other is not handler and _writes_to_console(other):
            root.removeHandler(other)
    # First, so that handlers after ours (pytest's capture, say) get redacted records.
    if handler in root.handlers:
        root.removeHandler(handler)
    root.handlers.insert(0, handler)
    root.setLevel(level.upper())
    for name in THIRD_PARTY_LOGGERS:
        logger = logging.getLogger(name)
        for own in list(logger.handlers):
            logger.removeHandler(own)
        logger.propagate = True
        # Their own defaults (uvicorn sets INFO) would override the level asked for.
        logger.setLevel(logging.NOTSET)


def _writes_to_console(handler: logging.Handler) -> bool:
    if not isinstance(handler, logging.StreamHandler) or isinstance(handler, logging.FileHandler):
        return False
    consoles = (sys.stderr, sys.stdout, sys.__stderr__, sys.__stdout__)
    return any(handler.stream is console for console in consoles)
