"""The pydantic base of every operator's parameters, and readable validation errors.

One model per operator is its constructor signature, its YAML schema and what
``to_yaml()`` writes back.  Constraints live on the fields (``Field(ge=1)``,
``Literal[...]``), so the error text and the documentation come from one place.
"""

from __future__ import annotations

import collections.abc
import datetime
import json
import math
import types
import typing
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence

import numpy as np
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo

from ragkit._corpus import saved_scalar
from ragkit.errors import ParamError, RagkitError

if TYPE_CHECKING:
    from typing_extensions import Self

_P = typing.TypeVar("_P", bound="Params")

__all__ = ["Params", "MetadataFilter", "ModelName", "Seed", "MAX_INT", "VectorDtype", "FdeDtype", "FloatDtype",
           "Metric", "SPELLINGS", "canonical_spelling", "has_upper_bound", "validate_params",
           "format_validation_error", "describe_error", "FieldRefusal", "error_loc",
           "update_params", "format_loc", "model_at", "QUOTE_AS_WRITTEN", "shown", "LONG_INT_DIGITS",
           "params_section", "document_params"]


def _plain(value: Any) -> Any:
    """A filter value as plain Python: numpy scalars as a save writes them (:func:`~ragkit._corpus.saved_scalar`:
    ``np.float32(0.1)`` as ``0.1``, as a corpus keeps such metadata; a datetime64 and other 0-d values by
    ``.item()``), any collection -> a list."""
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value[()]
    if isinstance(value, np.generic):
        plain = saved_scalar(value)
        return value.item() if plain is value else plain
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:
        return value.item()
    if isinstance(value, (str, bytes)) or not isinstance(value, typing.Iterable):
        return value
    return [_plain(v) for v in value]


def _metadata_filter(value: Any) -> Any:
    """A retriever's ``filter`` parameter: the rules of the ``filter`` search option (no query
    operators such as ``{"$gte": 2020}``, string field names), values made plain Python (numpy
    values, ranges, Series), so that it validates where it is written and saves as YAML."""
    from ragkit.options import filter_value

    try:
        value = filter_value(value)
    except TypeError as e:  # pydantic reports ValueErrors only
        raise ValueError(str(e)) from None
    if value is None:
        return None
    plain = {key: _plain(v) for key, v in value.items()}
    for key, v in plain.items():  # NaN matches nothing, and JSON/YAML would save NaN or inf as null
        if any(isinstance(x, float) and not math.isfinite(x) for x in (v if isinstance(v, list) else [v])):
            raise ValueError(f"filter field {key!r}: {v!r} holds a value that is not a finite number (NaN equals "
                             "nothing, and it would be saved as null)")
        odd = _unsavable(v)
        if odd is not None:  # to_yaml would write it as a string, which no longer equals the column's values
            hint = " (YAML reads an unquoted 2020-01-01 as a date: quote it)" if hasattr(odd, "isoformat") else ""
            raise ValueError(f"filter field {key!r}: {odd!r} is a {type(odd).__name__}; a filter parameter holds "
                             f"strings, numbers, booleans, null and lists of them, which save as YAML{hint}")
    return plain


def _unsavable(v: Any) -> Any:
    """The first value in ``v`` (a filter value, lists nested) that YAML / JSON cannot hold as itself."""
    if isinstance(v, list):
        return next((x for x in map(_unsavable, v) if x is not None), None)
    return None if v is None or isinstance(v, (str, bool, int, float)) else v


def _model_name(value: str) -> str:
    if not value.strip():  # Path("") is the current folder: it "exists", and fit failed 16 s later
        raise ValueError("expected a model name or folder, got an empty string")
    return value


def _not_an_encoder(value: Any) -> Any:
    """Refuse an encoder object given where its name belongs (``Dense(model=HashingEncoder(...))``), saying
    how to use it: register it under a name, then name it."""
    encoder_like = hasattr(value, "encode_queries") or (  # (not a tokenizer: it has encode, but no dimension)
        hasattr(value, "encode") and (hasattr(value, "dim") or hasattr(value, "get_sentence_embedding_dimension")))
    if not isinstance(value, (str, bytes)) and encoder_like:
        raise ValueError(f"expected a model name or folder, got the encoder object {value!r:.80}; a model parameter "
                         "takes a name: register the encoder under one first, ragkit.encoders.register_encoder("
                         "'my-encoder', encoder), then pass model='my-encoder'")
    if not isinstance(value, (str, bytes)) and hasattr(value, "embed_query") and hasattr(value, "embed_documents"):
        raise ValueError(f"expected a model name or folder, got the LangChain Embeddings {value!r:.80}; a model "
                         "parameter takes a name: wrap and register it under one first, ragkit.integrations.langchain."
                         "LangChainEmbeddingsEncoder(embeddings, key='my-embedder').register('my-embedder'), then pass "
                         "model='my-embedder'")
    return value


#: The type of an operator's ``model`` parameter: a non-blank model name or folder (an encoder object is
#: refused with how to register it under a name).
ModelName = typing.Annotated[str, BeforeValidator(_not_an_encoder), AfterValidator(_model_name)]
#: The largest integer an operator parameter takes unless its field sets its own upper bound: a
#: count beyond it (``k``, a graph degree, restarts, threads) names nothing a machine can hold or
#: finish, and numpy / usearch / scikit-learn overflow or hang on it instead of saying so.
MAX_INT = 2**31 - 1
#: The type of a ``seed`` parameter: numpy's generators and scikit-learn take 0 .. 2**32 - 1.
Seed = typing.Annotated[int, Field(ge=0, le=2**32 - 1)]


#: An integer with more decimal digits than this is shown by its length, not its digits
#: (:func:`shown`): Python refuses to print one past ``sys.get_int_max_str_digits()`` (4,300).
LONG_INT_DIGITS = 100


def _short_repr(value: Any) -> str:
    """``repr(value)``, at most 60 characters, or the type's name where ``repr`` itself fails."""
    try:
        text = shown(value)
    except Exception:  # noqa: BLE001 - a value whose repr raises is still named by its type
        return f"a {type(value).__name__}"
    return text if len(text) <= 60 else text[:57] + "..."


def shown(value: Any) -> str:
    """``repr(value)`` for an error message, but an integer of more than :data:`LONG_INT_DIGITS` digits
    as ``an integer of 5,000 digits`` (its ``repr`` is unreadable, and past 4,300 digits raises
    ``ValueError``), and a value holding such an integer as its type."""
    if _long_int(value):
        n = abs(value)
        digits = int(n.bit_length() * 0.30102999566398120) + 1  # log10(2): off by one at most, so
        digits -= n < 10 ** (digits - 1)
        digits += n >= 10 ** digits
        return f"{'a negative' if value < 0 else 'an'} integer of {digits:,} digits"
    try:
        return repr(value)
    except ValueError:  # a list or mapping holding an integer too long to print
        return f"a {type(value).__name__} holding an integer too long to print"


def _long_int(value: Any) -> bool:
    """Whether ``value`` is an integer (not a bool) of more than :data:`LONG_INT_DIGITS` digits."""
    return isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10 ** LONG_INT_DIGITS


#: The type of a retriever's ``filter`` parameter (see :func:`_metadata_filter`).
MetadataFilter = typing.Annotated[typing.Optional[dict[str, Any]], BeforeValidator(_metadata_filter)]

#: Spellings accepted for a dtype or a metric, each group ending at the names the fields use:
#: one YAML can say ``float16`` (or ``fp16``, ``half``) to Dense, Muvera and Generate alike.
SPELLINGS: tuple[frozenset[str], ...] = (
    frozenset({"float32", "fp32", "f32"}),
    frozenset({"float16", "fp16", "half", "f16"}),
    frozenset({"int8", "i8"}),
    frozenset({"binary", "b1", "bit"}),
    frozenset({"cosine", "cos"}),
    frozenset({"ip", "dot", "inner_product"}),
)


def canonical_spelling(value: Any, accepted: Sequence[str]) -> Any:
    """``value`` in the spelling of ``accepted`` (case-insensitive; a numpy dtype or scalar type as
    its name): ``canonical_spelling("float16", ("f32", "f16")) == "f16"``.  A value no group maps to
    one of ``accepted`` is returned as given, for the field's ``Literal`` to refuse (naming the
    accepted values)."""
    if isinstance(value, np.dtype) or (isinstance(value, type) and issubclass(value, np.generic)):
        name = np.dtype(value).name
    elif isinstance(value, str):
        name = value.strip().lower()
    else:
        return value
    for group in SPELLINGS:
        if name in group:
            return next((a for a in accepted if a in group), value)
    return value


def _spelled(*accepted: str) -> BeforeValidator:
    return BeforeValidator(lambda v: canonical_spelling(v, accepted))


#: A vector index's storage dtype (Dense ``dtype``): written ``f32``, ``f16``, ``i8`` or ``b1``;
#: ``float32`` / ``fp32``, ``float16`` / ``fp16`` / ``half``, ``int8``, ``binary`` / ``bit`` are read as those.
VectorDtype = typing.Annotated[typing.Literal["f32", "f16", "i8", "b1"], _spelled("f32", "f16", "i8", "b1")]
#: A float-or-int8 vector storage dtype (Muvera ``fde_dtype``): ``f32``, ``f16`` or ``i8``, aliases as above.
FdeDtype = typing.Annotated[typing.Literal["f32", "f16", "i8"], _spelled("f32", "f16", "i8")]
#: A float storage dtype (Generate ``storage_dtype``): written ``float32`` or ``float16``; ``f32`` / ``fp32``,
#: ``f16`` / ``fp16`` / ``half`` are read as those.
FloatDtype = typing.Annotated[typing.Literal["float32", "float16"], _spelled("float32", "float16")]
#: A similarity (Dense ``metric``): written ``cos`` or ``ip``; ``cosine``, ``dot`` / ``inner_product`` are read
#: as those.
Metric = typing.Annotated[typing.Literal["cos", "ip"], _spelled("cos", "ip")]


def has_upper_bound(field: FieldInfo) -> bool:
    """Whether a pydantic field sets its own ``le`` / ``lt`` bound (else :data:`MAX_INT` bounds its integers)."""
    return any(getattr(m, "le", None) is not None or getattr(m, "lt", None) is not None for m in field.metadata)


if TYPE_CHECKING:
    from pydantic import PrivateAttr
    from pydantic._internal._model_construction import ModelMetaclass, NoInitField
    from typing_extensions import dataclass_transform

    @dataclass_transform(kw_only_default=True, frozen_default=True, field_specifiers=(Field, PrivateAttr, NoInitField))
    class _FrozenModelMeta(ModelMetaclass):
        """pydantic's metaclass as type checkers see it, with ``frozen_default=True``: every :class:`Params` model,
        a user's subclass included, is frozen to them (``op.params.k = 7`` flagged), as ``model_config`` makes it at
        run time.  (``class Params(BaseModel, frozen=True)`` would be seen too, but then a subclass that does not
        repeat ``frozen=True`` is refused by both mypy and pyright: "non-frozen dataclass cannot inherit from a
        frozen dataclass".)"""

    class _ParamsBase(BaseModel, metaclass=_FrozenModelMeta):
        pass
else:
    _ParamsBase = BaseModel  # (at run time pydantic's own: nothing changes)


class Params(_ParamsBase):
    """Base class of operator parameter models: unknown keys are refused, instances are frozen.

    Type checkers see them frozen too (through a metaclass seen only by them) and flag ``op.params.k = 7``; at
    run time the assignment is a :class:`~ragkit.errors.ParamError` saying how to change a parameter
    (:meth:`__setattr__`)."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True, allow_inf_nan=False)

    if not TYPE_CHECKING:  # (hidden from type checkers, which read the class as frozen and refuse the assignment)
        def __setattr__(self, name: str, value: Any) -> None:
            """Refuse changing a parameter in place (pydantic's "Instance is frozen") with a :class:`ParamError`
            naming the field and the ways to change it; private attributes (``_name``) are pydantic's."""
            if name.startswith("_"):
                super().__setattr__(name, value)
                return
            raise self._frozen_refusal(name, f"set {name}={_short_repr(value)}", f"{name}={_short_repr(value)}")

        def __delattr__(self, name: str) -> None:
            if name.startswith("_"):
                super().__delattr__(name)
                return
            raise self._frozen_refusal(name, f"delete {name}", f"{name}=...")

    def _frozen_refusal(self, name: str, attempt: str, change: str) -> ParamError:
        """The :class:`ParamError` of a change in place of the frozen parameter ``name`` (``attempt``: what was
        tried, ``set k=7``; ``change``: the keyword that makes it, ``k=7``)."""
        model = type(self).__name__
        fields = type(self).model_fields
        if name not in fields:
            return ParamError(f"{model}: cannot {attempt}: parameters are frozen, and {model} has no parameter "
                              f"{name!r} (its parameters: {', '.join(fields) or 'none'})", path=name)
        return ParamError(
            f"{model}.{name}: cannot {attempt} in place: an operator's parameters are frozen (validated once, "
            f"then compared, saved and fingerprinted as they are). To change it, build the operator anew, "
            f"type(op)(op.params.updated({change})), and fit it; or give a fitted operator a validated copy, "
            f"op.params = op.params.updated({change}), for a parameter its search reads (what fit learned stays as "
            f"it was)", path=name)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_number(cls, v: Any, info: ValidationInfo) -> Any:
        """``k: yes`` in YAML is ``True``: refused where a number or a list of numbers is expected
        (pydantic reads it as 1 / 1.0).  The hint fits where the value came from (the validation
        context's ``source``: ``"yaml"``, ``"python"``, or not known)."""
        annotation = cls.model_fields[info.field_name].annotation if info.field_name else None
        source = info.context.get("source") if isinstance(info.context, Mapping) else None
        if isinstance(v, (bool, np.bool_)) and (kind := _number_kind(annotation)):
            raise ValueError(f"expected {kind}, got {v!r}; {_bool_not_number(source)}")
        if isinstance(v, (list, tuple)) and (kind := _items_number_kind(annotation)):
            for i, x in enumerate(v):
                if isinstance(x, (bool, np.bool_)):
                    raise ValueError(f"item {i}: expected {kind}, got {x!r}; {_bool_not_number(source)}")
        return v

    @field_validator("*", mode="after")
    @classmethod
    def _bounded_int(cls, v: Any, info: ValidationInfo) -> Any:
        """An integer (or list of integers) beyond :data:`MAX_INT` is refused, unless the field
        sets its own ``le`` / ``lt`` bound (as :data:`Seed` does)."""
        field = cls.model_fields[info.field_name] if info.field_name else None
        if field is None or has_upper_bound(field):
            return v
        for x in (v if isinstance(v, (list, tuple)) else [v]):
            if isinstance(x, int) and not isinstance(x, bool) and abs(x) > MAX_INT:
                raise ValueError(f"expected an integer within ±{MAX_INT:,}, got {shown(x)}")
        return v

    @model_validator(mode="before")
    @classmethod
    def _plain_numpy_scalars(cls, data: Any) -> Any:
        """Numpy scalars (``np.int64(5)`` from a grid search's ``np.arange``, a DataFrame cell) become the
        Python numbers they hold, also inside lists and mappings (``sharded: {retriever: {bm25: {k: ...}}}``),
        so that a field typed ``Any`` or ``dict`` writes as JSON as a typed field does."""
        return _numpy_plain(data) if isinstance(data, dict) else data

    @model_validator(mode="after")
    def _json_values(self) -> Self:
        """Every value writes as JSON (``params.json``) and YAML (``to_yaml()``): a function, a numpy array, an
        object or bytes that are not UTF-8 is refused here, naming the field and the value's type, instead of
        failing at ``repr``, ``to_yaml()`` or ``save()`` with a serialiser's error.  One JSON dump of the
        model; the fields one by one only to name the one at fault."""
        try:
            self.model_dump(mode="json")
        except (ValueError, TypeError):  # (PydanticSerializationError and UnicodeDecodeError are ValueErrors)
            for name in type(self).model_fields:
                try:
                    self.model_dump(mode="json", include={name})
                except (ValueError, TypeError):
                    value = getattr(self, name)
                    tp = type(value)
                    label = tp.__qualname__ if tp.__module__ == "builtins" else f"{tp.__module__}.{tp.__qualname__}"
                    hint = ("a list (array.tolist())" if hasattr(value, "tolist") else
                            "a str (its text: value.decode())" if isinstance(value, (bytes, bytearray)) else
                            "a name or plain values that select the object (as model= names an encoder), or "
                            "set the object on the operator outside its Params")
                    raise FieldRefusal(name, f"got a value of type {label} ({_short_repr(value)}), which cannot be "
                                             f"written as JSON / YAML (params.json, to_yaml(), repr): a parameter is "
                                             f"a string, number, boolean, null, or a list or mapping of them; give "
                                             f"{hint}") from None
            raise
        # a float that is not finite, at any depth of a field typed dict or Any (a typed float field refuses it
        # itself): the JSON dump above writes it as null, so that the saved parameters hold another value
        for name in type(self).model_fields:
            hit = _non_finite(getattr(self, name))
            if hit is not None:
                where, value = hit
                raise FieldRefusal(f"{name}{where}", f"expected a finite number, got {value!r}, which JSON cannot "
                                                     "hold (params.json and to_yaml() would write it as null)")
        return self

    def refuse_unused(self, *checks: tuple[str, bool, str]) -> None:
        """For a model validator: each ``(field, used, needs)`` whose field holds a value other than
        its default though ``used`` is False (the field is read only with the setting ``needs``) is
        a :class:`FieldRefusal` of that field: a parameter that would silently do nothing."""
        for name, used, needs in checks:
            value = getattr(self, name)
            if not used and value != type(self).model_fields[name].default:
                raise FieldRefusal(name, f"{name}={shown(value)} has no effect without {needs}; leave it out, or set "
                                         f"{needs}")

    def given(self, *names: str) -> str:
        """The first of ``names`` that was given (set explicitly), else the first: the field a rule across
        fields names when it refuses them (:class:`FieldRefusal`), so that the error points at what was written
        (``k: 300`` against the default ``candidates``: ``muvera.k``)."""
        return next((n for n in names if n in self.model_fields_set), names[0])

    def non_default(self) -> dict[str, Any]:
        """The parameters that differ from their defaults, as plain JSON/YAML values."""
        return self.model_dump(mode="json", exclude_defaults=True)

    def updated(self, **changes: Any) -> Self:
        """A validated copy with ``changes`` applied (given in Python: error hints do not mention YAML).

        A refused change raises pydantic's ``ValidationError``, for a caller that words it for its own
        context (a search option: :mod:`ragkit.options`); :func:`update_params` gives a
        :class:`~ragkit.errors.ParamError` worded as an operator's constructor words it."""
        return type(self).model_validate({**self.model_dump(), **changes}, context={"source": "python"})


def _numpy_plain(value: Any) -> Any:
    """``value`` with every numpy scalar in it, at any depth of dicts, lists and tuples, as a Python scalar: as a
    save writes it (:func:`~ragkit._corpus.saved_scalar`: ``np.float32(0.1)`` as ``0.1``, so that a ``filter``
    parameter finds the documents a corpus keeps that value for), a datetime64 by ``.item()``."""
    if isinstance(value, np.generic):
        plain = saved_scalar(value)
        return value.item() if plain is value else plain
    if isinstance(value, dict):
        return {k: _numpy_plain(v) for k, v in value.items()}
    if type(value) in (list, tuple):
        return type(value)(_numpy_plain(v) for v in value)
    return value


def _non_finite(value: Any, where: str = "") -> tuple[str, float] | None:
    """The place (``".a[0]"``, ``""`` for ``value`` itself) and value of the first float in ``value`` (lists,
    tuples, sets and mappings walked, a pydantic model's fields too) that is NaN or infinite; ``None`` if none."""
    if isinstance(value, (float, np.floating)):
        return None if math.isfinite(value) else (where, float(value))
    if isinstance(value, BaseModel):
        value = {k: getattr(value, k) for k in type(value).model_fields}
    if isinstance(value, Mapping):
        items: Any = ((f"{where}.{k}" if isinstance(k, str) and k.isidentifier() else f"{where}[{k!r}]", v)
                      for k, v in value.items())
    elif isinstance(value, (list, tuple, set, frozenset)):
        items = ((f"{where}[{i}]", v) for i, v in enumerate(value))
    else:
        return None
    for at, v in items:
        hit = _non_finite(v, at)
        if hit is not None:
            return hit
    return None


class FieldRefusal(ValueError):
    """A model validator's refusal of one field's value by a rule across fields (``beta`` without
    ``method: is``): pydantic places a model validator's error at the model (location ``()``, its input
    the whole mapping); :func:`format_validation_error` places this one at ``field``, as a single-field
    error is (``pipeline[1].dbnorm.beta: ...``), and words it without that mapping (its text quotes the
    values it is about)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field

    def __reduce__(self) -> tuple[Any, ...]:  # (pickled with a ValidationError's context: both arguments)
        return type(self), (self.field, str(self))


def error_loc(err: Mapping[str, Any]) -> tuple[Any, ...]:
    """The location of one pydantic error: its ``loc``, followed by the field of a :class:`FieldRefusal`."""
    loc = tuple(err.get("loc") or ())
    cause = (err.get("ctx") or {}).get("error")
    return (*loc, cause.field) if isinstance(cause, FieldRefusal) else loc


def _bool_not_number(source: str | None) -> str:
    """Why a boolean is refused as a number, for a value from ``source`` (``"yaml"``, ``"python"``
    or ``None``: not known, so both are named)."""
    if source == "yaml":
        return "YAML reads unquoted yes/no/on/off/true/false as booleans"
    if source == "python":
        return "a boolean is not a number"
    return "a boolean (True/False, or YAML's unquoted yes/no/on/off) is not a number"


#: The end of the hint for a number YAML read where a string is expected: what was written (``1e3``,
#: ``0x1f``, ``1_000``) is not known from the number (1000.0, 31, 1000), so no quoted example is made
#: from it; a YAML loader that has the text appends it (``pipelines.yaml`` does: ``...you wrote it: "1e3"``).
QUOTE_AS_WRITTEN = "quote the value as you wrote it"


def _quote_hint(got: Any, source: str | None) -> str:
    """For a boolean, a number or a date (YAML's unquoted ``2020-01-01``) given where a string is expected: why,
    and how to write it."""
    if isinstance(got, bool):  # what was written (yes, on, true) is not known once YAML has read it
        words = ("yes", "on", "true") if got else ("no", "off", "false")
        in_yaml = (f"YAML reads unquoted {'/'.join(words)} as {got}: quote the word you wrote, "
                   f'e.g. "{words[0]}" (or "{words[1]}", "{words[2]}")')
        kind = "a boolean"
    elif isinstance(got, datetime.datetime):  # its isoformat ("...T10:00:00") need not be what was written
        in_yaml = f"YAML reads unquoted dates with a time (2020-01-01 10:00:00) as datetimes: {QUOTE_AS_WRITTEN}"
        kind = "a datetime"
    elif isinstance(got, datetime.date):  # YAML reads a date only as YYYY-MM-DD, which its isoformat is
        in_yaml = f'YAML reads an unquoted {got.isoformat()} as a date: quote it, "{got.isoformat()}"'
        kind = "a date"
    else:  # the number's own text ("1000.0" for 1e3) is not what was written
        in_yaml = f"YAML reads unquoted numbers (10, 1.5, 1e3, 0x1f) as numbers: {QUOTE_AS_WRITTEN}"
        kind = "a number"
    if source == "yaml":
        return in_yaml
    return f"{kind} is not a string" if source == "python" else f"{kind} is not a string (in a YAML file: {in_yaml})"


def describe_error(err: Mapping[str, Any], source: str | None = None) -> str:
    """One pydantic error as ``expected ..., got ...`` text; ``source`` (``"yaml"``, ``"python"`` or
    ``None``: not known) is where the value came from, for the hint about YAML's booleans."""
    t, ctx, got = err["type"], err.get("ctx") or {}, err.get("input")
    if t == "extra_forbidden":
        return "unknown parameter"
    if t == "missing":
        return "required parameter is missing"
    if t == "string_type" and isinstance(got, (bool, int, float, datetime.date)):  # YAML's 1e3, on, 2020-01-01
        said = f"{type(got).__name__} {got}" if isinstance(got, datetime.date) else shown(got)
        return f"expected a string, got {said}; {_quote_hint(got, source)}"
    if t == "greater_than_equal" and ctx.get("ge") == 1 and isinstance(got, int) and not isinstance(got, bool):
        return f"expected a positive integer, got {shown(got)}"  # ge=1 bounds counts; gt=0 bounds real numbers
    if t == "finite_number":
        return f"expected a finite number, got {shown(got)}"
    if t == "model_type":  # a nested settings model (dense's adapt, a rule of rule_router) given a scalar or a list
        loc = err.get("loc") or ()
        if loc and isinstance(loc[-1], str):
            return (f"expected a mapping of {loc[-1]}'s settings (e.g. {loc[-1]}: {{}} for the defaults), "
                    f"got {shown(got)}")
        return f"expected a mapping of settings (a {ctx.get('class_name', 'settings object')}), got {shown(got)}"
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
        "too_short": lambda: f"at least {_items(ctx.get('min_length'))}",
        "too_long": lambda: f"at most {_items(ctx.get('max_length'))}",
    }.get(t)
    if expected is None:
        msg = str(err.get("msg", "invalid value"))
        msg = msg.removeprefix("Value error, ").removeprefix("Assertion failed, ")
        if isinstance(ctx.get("error"), FieldRefusal):  # its input is the whole mapping; its text quotes the value
            return msg
        return f"{msg}, got {shown(got)}" if "got" not in msg else msg
    return f"expected {expected()}, got {shown(got)}"


def _items(n: Any) -> str:
    """``"1 item"``, ``"3 items"``."""
    return f"{n} item" if n == 1 else f"{n} items"


def _number_kind(annotation: Any) -> str | None:
    """``"an integer"`` / ``"a number"`` when a field's type is ``int`` / ``float`` (alone or in a
    union without ``bool``), else None."""
    if annotation is int:
        return "an integer"
    if annotation is float:
        return "a number"
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = typing.get_args(annotation)
        if bool in args:
            return None
        return next((kind for a in args if (kind := _number_kind(a))), None)
    return None


def _items_number_kind(annotation: Any) -> str | None:
    """The :func:`_number_kind` of a list / tuple / sequence field's items (or of a union's list member)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return next((kind for a in typing.get_args(annotation) if (kind := _items_number_kind(a))), None)
    if origin in (list, tuple, Sequence, typing.Sequence) or (
            isinstance(origin, type) and issubclass(origin, (list, tuple))):
        args = [a for a in typing.get_args(annotation) if a is not Ellipsis]
        return next((kind for a in args if (kind := _number_kind(a))), None)
    return None


def format_loc(prefix: str, loc: Sequence[Any]) -> str:
    """A pydantic error location under ``prefix`` in the YAML path style: ``rules[0].label``."""
    out = prefix
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}" if out else str(part)
    return out


def _unwrap(tp: Any) -> Any:
    """``tp`` without ``Annotated[...]`` and without ``None`` in an optional (``X | None`` -> ``X``)."""
    while typing.get_origin(tp) is typing.Annotated:
        tp = typing.get_args(tp)[0]
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return _unwrap(args[0])
    return tp


def _type_at(tp: Any, part: Any) -> Any:
    """The annotation found at one error-location ``part`` (field name, list index, dict key or
    union member name) inside the annotation ``tp``; ``None`` when it cannot be told."""
    tp = _unwrap(tp)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        field = tp.model_fields.get(part) if isinstance(part, str) else None
        return None if field is None else field.annotation
    if origin in (typing.Union, types.UnionType):
        return next((a for a in args if getattr(_unwrap(a), "__name__", None) == part), None)
    if origin in (list, tuple, set, frozenset) and isinstance(part, int) and args:
        return args[0]
    if origin is dict and len(args) == 2:
        return args[1]
    return None


def model_at(model: type[BaseModel], loc: Sequence[Any]) -> type[BaseModel] | None:
    """The (nested) pydantic model that holds the value at error location ``loc`` of ``model``:
    for ``("rules", 0, "max_word")`` in ``RuleRouterParams``, the ``Rule`` model."""
    tp: Any = model
    for part in loc[:-1]:
        tp = _type_at(tp, part)
        if tp is None:
            return None
    tp = _unwrap(tp)
    return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None


def format_validation_error(exc: ValidationError, owner: str, path: str = "",
                            fields: list[str] | None = None, model: type[BaseModel] | None = None,
                            source: str | None = None) -> ParamError:
    """Turn a pydantic error into a :class:`ParamError` whose lines read ``path.owner.field: expected ..., got ...``.

    List indices are written ``[i]`` (``rules[0].label``), as in the rest of a YAML path.  An
    unknown key lists the valid fields of the model that holds it: with ``model``, the nested
    model's (a ``rule_router`` rule's fields for a key inside ``rules[0]``), else ``fields``.
    ``source``: where the values came from (see :func:`describe_error`).
    """
    import difflib

    prefix = f"{path}.{owner}" if path else owner
    lines = []
    for err in exc.errors():
        where = format_loc(prefix, error_loc(err))
        text = describe_error(err, source)
        if err["type"] == "extra_forbidden":
            holder = model_at(model, err["loc"]) if model is not None else None
            valid = list(holder.model_fields) if holder is not None else fields
            if valid is not None:
                close = difflib.get_close_matches(str(err["loc"][-1]), valid, n=3)
                hint = f" (did you mean {', '.join(close)}?)" if close else ""
                of = owner if holder is None or holder is model else format_loc(owner, err["loc"][:-1])
                text = f"unknown parameter{hint}; valid parameters of {of} are: {', '.join(valid)}"
        lines.append(f"{where}: {text}")
    first = format_loc(prefix, error_loc(exc.errors()[0])) if exc.errors() else prefix
    return ParamError("\n".join(lines), path=first)


def refusal_of(exc: ValidationError, model: type[BaseModel]) -> RagkitError:
    """What a refused construction or assignment of the pydantic class ``model`` (``RagkitRetriever``,
    ``RagkitGenerator``) raises: the check's own :class:`~ragkit.errors.RagkitError`, which pydantic wrapped
    in a ``ValidationError`` (no ``RagkitError``: one ``except RagkitError`` missed it), or a field's
    refusal (``k=0``) as a :class:`ParamError` naming the field (``RagkitRetriever.k: expected a positive
    integer, got 0``)."""
    errors = exc.errors()
    own = (errors[0].get("ctx") or {}).get("error") if len(errors) == 1 else None
    if isinstance(own, RagkitError):
        return own
    return format_validation_error(exc, model.__name__, fields=list(model.model_fields), source="python")


def validate_params(model: type[Params], values: Any, owner: str, path: str = "", *,
                    source: str | None = None) -> Params:
    """Validate ``values`` (a mapping, ``None`` or a model instance) against ``model``.

    ``source``: where the values came from, ``"yaml"`` or ``"python"`` (``None``: not known), so
    that a hint about YAML's unquoted yes/no is given where it applies.
    """
    if isinstance(values, model):
        return values
    if values is None:
        values = {}
    if isinstance(values, BaseModel):
        values = values.model_dump()
    if not isinstance(values, Mapping):
        where = f"{path}.{owner}" if path else owner
        if not path and source != "yaml":  # Operator(10): a positional argument that is not a mapping
            raise ParamError(f"{where}: {_keywords_only(model, owner, values)}", path=where)
        raise ParamError(f"{where}: expected a mapping of parameters, got {shown(values)}", path=where)
    try:
        return model.model_validate(dict(values), context={"source": source} if source else None)
    except ValidationError as exc:
        raise format_validation_error(exc, owner, path, fields=list(model.model_fields), model=model,
                                      source=source) from None


def update_params(params: _P, changes: Mapping[str, Any], owner: str, path: str = "") -> _P:
    """``params.updated(**changes)``, a refused change raised as the :class:`ParamError` an operator's
    constructor raises (:func:`format_validation_error`: ``owner.field: expected ..., got ...``, an unknown
    key with the closest valid names), where :meth:`Params.updated` raises pydantic's ``ValidationError``."""
    try:
        return params.updated(**changes)
    except ValidationError as exc:
        model = type(params)
        raise format_validation_error(exc, owner, path, fields=list(model.model_fields), model=model,
                                      source="python") from None


def _keywords_only(model: type[Params], owner: str, value: Any) -> str:
    """The error text for an operator given a positional value (``BM25(10)``)."""
    try:
        from ragkit import registry

        cls = registry.get(owner).__name__
    except (ParamError, ImportError):  # not a registered operator: the model's name without "Params"
        cls = model.__name__.removesuffix("Params") or owner
    fields = model.model_fields
    field, info = ("k", fields["k"]) if "k" in fields else next(iter(fields.items()), ("k", None))
    simple = isinstance(value, (int, float, str)) and not isinstance(value, bool) and not _long_int(value)
    example = f"{field}={value!r}" if simple and info is not None and _accepts(info.annotation, value) else \
        f"{field}=..."
    return (f"{cls} takes its parameters as keyword arguments only, e.g. {cls}({example}); got the positional "
            f"argument {shown(value):.60}")


def _accepts(annotation: Any, value: Any) -> bool:
    """Whether ``value`` is of the plain type ``annotation`` (or of one member of an optional)."""
    tp = _unwrap(annotation)
    return isinstance(tp, type) and (isinstance(value, tp) or (tp is float and isinstance(value, int)))


#: The two ways a field is written in generated documentation: ``"numpydoc"`` (an operator's docstring and
#: ``help()``: ``None``, values as Python's ``repr``, ``{'a', 'b'}``, ``str``, a nested model by its class name)
#: and ``"yaml"`` (``ragkit describe``: ``null``, values as YAML spells them, ``a | b``, ``string``, ``mapping
#: (keys below)``).
DocStyle = typing.Literal["numpydoc", "yaml"]
_SCALAR_NAMES: dict[str, dict[Any, str]] = {
    "numpydoc": {type(None): "None"},
    "yaml": {int: "int", float: "float", bool: "bool (true | false)", str: "string", type(None): "null"},
}
_SEQUENCES = {list: "list", tuple: "tuple", set: "set", frozenset: "frozenset", collections.abc.Sequence: "sequence",
              collections.abc.Iterable: "iterable"}


def _yaml_value(value: Any) -> str:
    """``value`` written as YAML writes it in flow style (``null``, ``true``, ``lucene``, ``'yes'``, ``{bm25: {}}``)."""
    import yaml

    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    try:
        text = yaml.safe_dump(value, default_flow_style=True, width=10**6, sort_keys=False, allow_unicode=True)
    except yaml.YAMLError:
        return repr(value)
    return text.removesuffix("\n").removesuffix("\n...").strip()


def _strip_annotated(tp: Any) -> Any:
    """``tp`` without its ``Annotated[...]`` wrappers (an optional keeps its ``None``, unlike :func:`_unwrap`)."""
    while typing.get_origin(tp) is typing.Annotated:
        tp = typing.get_args(tp)[0]
    return tp


def _type_text(annotation: Any, style: DocStyle = "numpydoc") -> str:
    """A field's annotation as documentation writes it, in ``style`` (:data:`DocStyle`): numpydoc ``int``,
    ``{'a', 'b'}``, ``list of float or None``, ``AdaptConfig or None``; YAML ``int``, ``a | b``, ``string``,
    ``list of float or null``, ``mapping of string to float``, ``mapping (keys below)`` for a nested settings model,
    ``list of mappings (keys below)`` for a list of them."""
    yaml_style = style == "yaml"
    tp = _strip_annotated(annotation)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Literal:
        if yaml_style:
            return " | ".join(_yaml_value(a) for a in args)
        return "{" + ", ".join(repr(a) for a in args) + "}"
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        text = " or ".join(_type_text(a, style) for a in rest)
        return text + (f" or {_SCALAR_NAMES[style][type(None)]}" if len(rest) < len(args) else "")
    if origin in _SEQUENCES:
        container = "list" if yaml_style else _SEQUENCES[origin]
        items = [a for a in args if a is not Ellipsis]
        if not items:
            return container
        inner = _strip_annotated(items[0])
        if yaml_style and isinstance(inner, type) and issubclass(inner, BaseModel):
            return "list of mappings (keys below)"
        return f"{container} of {_type_text(inner, style)}"
    if origin in (dict, collections.abc.Mapping) or tp in (dict, collections.abc.Mapping):
        if yaml_style and len(args) == 2 and args[1] is not Any:
            return f"mapping of {_type_text(args[0], style)} to {_type_text(args[1], style)}"
        return "mapping"
    if yaml_style and isinstance(tp, type) and issubclass(tp, BaseModel):
        return "mapping (keys below)"
    if tp is Any:
        return "any"
    if isinstance(tp, type) and tp in _SCALAR_NAMES[style]:
        return _SCALAR_NAMES[style][tp]
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _is_text(tp: Any) -> bool:
    """Whether ``tp`` (optional or not) is a string, for the wording of a length bound."""
    tp = _strip_annotated(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return any(_is_text(a) for a in typing.get_args(tp) if a is not type(None))
    return tp is str


def _metadata(field: FieldInfo) -> Iterator[Any]:
    """The constraint objects of ``field``: its own, those of a ``Field(...)`` among them, and those of an
    ``Annotated`` type inside an optional (``Optional[Annotated[str, ...]]``)."""
    def walk(items: Any) -> Iterator[Any]:
        for m in items:
            if isinstance(m, FieldInfo):
                yield from walk(m.metadata)
            else:
                yield m

    yield from walk(field.metadata)
    tp = field.annotation
    for arg in (typing.get_args(tp) if typing.get_origin(tp) in (typing.Union, types.UnionType) else ()):
        if typing.get_origin(arg) is typing.Annotated:
            yield from walk(typing.get_args(arg)[1:])


def _bounds_text(field: FieldInfo) -> str:
    """``field``'s constraints as text, the same in both :data:`DocStyle`\\ s: ``>= 0, <= 1``, ``at least 1
    item``, ``at most 64 characters``, ``a multiple of 8``, ``matching the regex ...``; ``""`` when it has none."""
    marks = (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"))
    parts: list[str] = []
    noun = "character" if _is_text(field.annotation) else "item"
    for m in _metadata(field):
        parts += [f"{sign} {getattr(m, key)!r}" for key, sign in marks if getattr(m, key, None) is not None]
        for key, word in (("min_length", "at least"), ("max_length", "at most")):
            n = getattr(m, key, None)
            if n is not None:
                parts.append(f"{word} {n} {noun}{'' if n == 1 else 's'}")
        if getattr(m, "multiple_of", None) is not None:
            parts.append(f"a multiple of {m.multiple_of!r}")
        if getattr(m, "pattern", None) is not None:
            parts.append(f"matching the regex {m.pattern}")
    return ", ".join(dict.fromkeys(parts))


def _default_value(value: Any, style: DocStyle = "numpydoc") -> str:
    """A default value in ``style``: Python's ``repr`` (numpydoc), or as YAML writes it with a string in double
    quotes (``"default"``, not ``default``)."""
    if style == "numpydoc":
        return repr(value)
    return json.dumps(value, ensure_ascii=False) if isinstance(value, str) else _yaml_value(value)


def _default_text(field: FieldInfo, style: DocStyle = "numpydoc") -> str:
    """``required``, or ``default <value>`` in ``style`` (a ``default_factory`` called, one that takes the
    validated data given none)."""
    if field.is_required():
        return "required"
    if field.default_factory is not None:
        factory: Any = field.default_factory
        try:
            value = factory()
        except TypeError:  # a factory that takes the validated data
            value = factory({})
        return f"default {_default_value(value, style)}"
    return f"default {_default_value(field.default, style)}"


def params_section(model: type[Params]) -> str:
    """The numpydoc ``Parameters`` section of an operator, generated from its parameter model: one entry
    per field with its type, bounds, default and ``description`` (the same text a validation error and
    ``ragkit validate`` draw on), so ``help(BM25)`` documents what ``BM25(...)`` and its YAML accept. Type,
    bounds and default come from the helpers ``ragkit describe`` uses too, in their numpydoc style."""
    import textwrap

    lines = ["Parameters", "----------"]
    for name, field in model.model_fields.items():
        head = f"{name} : {_type_text(field.annotation)}"
        if bounds := _bounds_text(field):
            head += f" ({bounds})"
        if not field.is_required():
            head += f", {_default_text(field)}"
        lines.append(head)
        text = field.description or ""
        lines += textwrap.wrap(text, 96, initial_indent="    ", subsequent_indent="    ") or ["    (undocumented)"]
    return "\n".join(lines)


def document_params(cls: type, model: type[Params], yaml_name: str) -> None:
    """Give ``cls`` (an operator class) and ``model`` (its parameter model) the generated
    :func:`params_section`: inserted into the class docstring before its ``Examples`` (appended when there
    are none; left alone when it writes its own ``Parameters``), and as the model's docstring when it has
    none of its own."""
    import inspect

    section = params_section(model) if model.model_fields else "It has no parameters."
    doc = inspect.cleandoc(cls.__doc__ or "")
    if model.model_fields and "\nParameters\n---" not in "\n" + doc:
        at = doc.find("\nExamples\n--------")
        cls.__doc__ = (f"{doc[:at].rstrip()}\n\n{section}\n{doc[at:]}" if at >= 0 else f"{doc}\n\n{section}").strip()
    if model.__doc__ is None or model.__doc__ == Params.__doc__:
        model.__doc__ = f"Parameters of :class:`{cls.__name__}` (``{yaml_name}:`` in YAML).\n\n{section}"
