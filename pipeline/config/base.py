"""What every config section is: a frozen pydantic model that refuses unknown keys, and `setting`,
the one way a field (a setting) is declared."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field


def setting(default: Any = None, help: str = "", *, option: str = "", pattern: str = "", **bounds: Any) -> Any:
    """A field of a section: its default, help text, option name (where not derived) and bounds."""
    extra: dict[str, Any] = {k: v for k, v in (("option", option), ("pattern", pattern)) if v}
    return Field(default, description=help, json_schema_extra=extra or None, **bounds)


class Section(BaseModel):
    """A config section: unknown keys are refused, values are checked when set, never changed after."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=False)
    # Options are named <prefix><field> unless the field names its own.
    option_prefix: ClassVar[str] = ""
