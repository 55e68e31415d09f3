"""The pydantic base of every operator's parameters, and readable validation errors.

One model per operator is its constructor signature, its YAML schema and what
``to_yaml()`` writes back.  Constraints live on the fields (``Field(ge=1)``,
``Literal[...]``), so the error text and the documentation come from one place.
"""

from __future__ import annotations

from typing import Any, Mapping

from pydantic import BaseModel, ConfigDict, ValidationError

from ragkit.errors import ParamError

__all__ = ["Params", "validate_params", "format_validation_error", "describe_error"]


class Params(BaseModel):
    """Base class of operator parameter models: unknown keys are refused, instances are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    def non_default(self) -> dict[str, Any]:
        """The parameters that differ from their defaults, as plain JSON/YAML values."""
        return self.model_dump(mode="json", exclude_defaults=True)

    def updated(self, **changes: Any) -> "Params":
        """A validated copy with ``changes`` applied."""
        return type(self).model_validate({**self.model_dump(), **changes})


def describe_error(err: Mapping[str, Any]) -> str:
    """One pydantic error as ``expected ..., got ...`` text."""
    t, ctx, got = err["type"], err.get("ctx") or {}, err.get("input")
    if t == "extra_forbidden":
        return "unknown parameter"
    if t == "missing":
        return "required parameter is missing"
    if t in ("greater_than_equal", "greater_than") and isinstance(got, int) and not isinstance(got, bool):
        bound = ctx.get("ge", ctx.get("gt"))
        if (t == "greater_than_equal" and bound == 1) or (t == "greater_than" and bound == 0):
            return f"expected a positive integer, got {got!r}"
    expected = {
        "greater_than_equal": lambda: f"a value >= {ctx.get('ge')}",
        "greater_than": lambda: f"a value > {ctx.get('gt')}",
        "less_than_equal": lambda: f"a value <= {ctx.get('le')}",
        "less_than": lambda: f"a value < {ctx.get('lt')}",
        "int_type": lambda: "an integer", "int_parsing": lambda: "an integer",
        "int_from_float": lambda: "an integer",
        "float_type": lambda: "a number", "float_parsing": lambda: "a number",
        "bool_type": lambda: "true or false", "bool_parsing": lambda: "true or false",
        "string_type": lambda: "a string", "list_type": lambda: "a list", "dict_type": lambda: "a mapping",
        "literal_error": lambda: f"one of {ctx.get('expected')}",
        "enum": lambda: f"one of {ctx.get('expected')}",
        "string_pattern_mismatch": lambda: f"a string matching {ctx.get('pattern')!r}",
        "too_short": lambda: f"at least {ctx.get('min_length')} items",
        "too_long": lambda: f"at most {ctx.get('max_length')} items",
    }.get(t)
    if expected is None:
        msg = str(err.get("msg", "invalid value"))
        msg = msg.removeprefix("Value error, ").removeprefix("Assertion failed, ")
        return f"{msg}, got {got!r}" if "got" not in msg else msg
    return f"expected {expected()}, got {got!r}"


def format_validation_error(exc: ValidationError, owner: str, path: str = "",
                            fields: list[str] | None = None) -> ParamError:
    """Turn a pydantic error into a :class:`ParamError` whose lines read ``path.owner.field: expected ..., got ...``."""
    prefix = f"{path}.{owner}" if path else owner
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        where = f"{prefix}.{loc}" if loc else prefix
        text = describe_error(err)
        if err["type"] == "extra_forbidden" and fields is not None:
            import difflib

            close = difflib.get_close_matches(str(err["loc"][-1]), fields, n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            text = f"unknown parameter{hint}; valid parameters of {owner} are: {', '.join(fields)}"
        lines.append(f"{where}: {text}")
    first_loc = ".".join(str(p) for p in exc.errors()[0]["loc"]) if exc.errors() else ""
    return ParamError("\n".join(lines), path=f"{prefix}.{first_loc}" if first_loc else prefix)


def validate_params(model: type[Params], values: Any, owner: str, path: str = "") -> Params:
    """Validate ``values`` (a mapping, ``None`` or a model instance) against ``model``."""
    if isinstance(values, model):
        return values
    if values is None:
        values = {}
    if isinstance(values, BaseModel):
        values = values.model_dump()
    if not isinstance(values, Mapping):
        where = f"{path}.{owner}" if path else owner
        raise ParamError(f"{where}: expected a mapping of parameters, got {values!r}", path=where)
    try:
        return model.model_validate(dict(values))
    except ValidationError as exc:
        raise format_validation_error(exc, owner, path, fields=list(model.model_fields)) from None
