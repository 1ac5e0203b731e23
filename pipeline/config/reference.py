"""The settings as a flat list, read off the section models: what the command-line options, --help,
the Flex Template's metadata.json and docs/configuration.md are generated from."""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Iterator
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from pipeline.config.kinds import PATH_KINDS, kind_of
from pipeline.config.sections import SECTIONS


@dataclasses.dataclass(frozen=True)
class Setting:
    key: str  # dotted, as in the file: enrich.postgres.dsn
    option: str  # the command-line option / template parameter, without --
    kind: str  # str | int | float | bool | path | glob | dir | choice | timestamp
    default: Any
    help: str
    section: str
    choices: tuple[str, ...] = ()
    pattern: str = ""
    required: bool = False
    minimum: float | None = None  # inclusive bound
    above: float | None = None  # exclusive bound

    @property
    def is_path(self) -> bool:
        return self.kind in PATH_KINDS


def settings() -> Iterator[Setting]:
    for name, model in SECTIONS.items():
        yield from _settings_of(model, name, name)


def _settings_of(model: type[BaseModel], prefix: str, section: str) -> Iterator[Setting]:
    option_prefix = getattr(model, "option_prefix", "")
    for field_name, field in model.model_fields.items():
        key = f"{prefix}.{field_name}"
        nested = field.annotation
        if isinstance(nested, type) and issubclass(nested, BaseModel):
            yield from _settings_of(nested, key, section)
            continue
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        kind, choices = _kind(field)
        minimum = above = None
        for bound in field.metadata:
            minimum = getattr(bound, "ge", minimum)
            above = getattr(bound, "gt", above)
        yield Setting(
            key=key,
            option=str(extra.get("option") or f"{option_prefix}{field_name}"),
            kind=kind,
            default=None if field.default is PydanticUndefined else field.default,
            help=field.description or "",
            section=section,
            choices=choices,
            pattern=str(extra.get("pattern", "")),
            required=field.is_required(),
            minimum=minimum,
            above=above,
        )


def _kind(field: FieldInfo) -> tuple[str, tuple[str, ...]]:
    annotation = field.annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
    if typing.get_origin(annotation) is Literal:
        return "choice", tuple(typing.get_args(annotation))
    found = kind_of(field.metadata) or kind_of(getattr(annotation, "__metadata__", ()))
    if found is None:
        raise TypeError(f"{field}: a setting's type must be one of pipeline.config.kinds or a Literal of choices")
    return found, ()
