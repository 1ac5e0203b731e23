"""The kinds of value a setting holds, as pydantic annotated types that check a value from either
side: the YAML file (typed) or the command line (text).

Each kind is named in the field's metadata (`kind`), which the generated references (options,
--help, the Flex Template's parameters, docs/configuration.md) use to say what a value looks like.
Paths are resolved against the config file's folder before validation (pipeline.config.load).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from typing import Annotated, Any

from pydantic import BeforeValidator

from pipeline.shared.clock import parse_rfc3339


def _text(value: Any, non_empty: bool) -> str:
    if not isinstance(value, str) or (non_empty and not value):
        raise ValueError(
            f"expected a non-empty string, got {value!r}" if non_empty else f"expected text, got {value!r}"
        )
    return value


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ValueError(f"expected true or false, got {value!r}")


def _int(value: Any) -> int:
    try:
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise ValueError
        return int(value)
    except ValueError:
        raise ValueError(f"expected an integer, got {value!r}") from None


def _float(value: Any) -> float:
    try:
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise ValueError
        return float(value)
    except ValueError:
        raise ValueError(f"expected a number, got {value!r}") from None


def _timestamp(value: Any) -> dt.datetime:
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            raise ValueError(f"{value.isoformat()} has no time zone offset")
        value = value.isoformat()  # YAML reads unquoted timestamps itself; check them like text
    if not isinstance(value, str):
        raise ValueError(f"expected an RFC 3339 timestamp, got {value!r}")
    return parse_rfc3339(value)


def _of_kind(name: str, check: Callable[[Any], Any]) -> BeforeValidator:
    """A validator that also says which kind of value it takes (read by pipeline.config.reference)."""

    def validate(value: Any) -> Any:
        return check(value)

    validate.kind = name  # type: ignore[attr-defined]
    return BeforeValidator(validate)


def kind_of(metadata: Iterable[Any]) -> str | None:
    for meta in metadata:
        name = getattr(getattr(meta, "func", None), "kind", None)
        if name:
            return str(name)
    return None


Text = Annotated[str, _of_kind("str", lambda v: _text(v, non_empty=False))]
Path = Annotated[str, _of_kind("path", lambda v: _text(v, non_empty=True))]
Glob = Annotated[str, _of_kind("glob", lambda v: _text(v, non_empty=True))]
Dir = Annotated[str, _of_kind("dir", lambda v: _text(v, non_empty=True))]
Flag = Annotated[bool, _of_kind("bool", _bool)]
Int = Annotated[int, _of_kind("int", _int)]
Float = Annotated[float, _of_kind("float", _float)]
Timestamp = Annotated[dt.datetime, _of_kind("timestamp", _timestamp)]

PATH_KINDS = ("path", "glob", "dir")
