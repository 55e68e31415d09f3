"""A plain-text parameter reference of the registered operators and of pipeline YAML's structural keys.

Everything shown is read from where it is defined, nothing is copied: an operator's parameters from its pydantic
``Params`` model (YAML name, type, default, bounds and the field's ``description``; a nested settings model such as
``rule_router``'s rules expanded one level), its summary from its class docstring; the keys of ``parallel``,
``route`` and ``loop`` from :data:`ragkit.pipelines.yaml.STRUCTURAL`, their meaning from the ``Parameters`` section
of the docstring of the class each builds, their defaults from that class's constructor (a parallel without
``fuse:``: the fuser ``Parallel`` makes itself).  The text is deterministic, has no markup and is wrapped at
:data:`WIDTH` columns, for a command line to print (``describe("rule_router")``).
"""

from __future__ import annotations

import inspect
import re
import textwrap
import types
import typing
from typing import Any

from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic.fields import FieldInfo

from ragkit import registry
from ragkit.errors import InputTypeError, ParamError
from ragkit.params import _bounds_text, _default_text, _strip_annotated, _type_text, _yaml_value

__all__ = ["WIDTH", "operator_table", "table_text", "describe", "undocumented_fields"]

#: The width the reference is wrapped at (a word longer than a line, a long regex, is not broken).
WIDTH = 100
_NO_DESCRIPTION = "(no description)"
#: A numpydoc section header: a title line, then a line of dashes.
_SECTION = re.compile(r"^([A-Za-z][A-Za-z ]*)\n-{2,}[ \t]*$", re.MULTILINE)
#: Text that cites a paper: an arXiv number, "et al.", a venue and year, or "Author & Author, ... 2009".
_CITATION = re.compile(
    r"arXiv:? ?\d{4}\.\d{4,5}|\bet al\."
    r"|\b(?:SIGIR|SIGMOD|NeurIPS|NIPS|TPAMI|TREC|CIKM|TOIS|ICML|ICLR|ACL|EMNLP|NAACL|KDD|PAKDD|WSDM|WWW|ECIR|VLDB|TACL"
    r"|JMLR|CVPR|ICCV|ECCV|AAAI|IJCAI)\b,? ?(?:19|20)\d\d"
    r"|[A-Z][\w-]+ & [A-Z][\w-]+,[^.;]*\b(?:19|20)\d\d\b")
#: Words ending in a dot that end no sentence.
_ABBREVIATIONS = ("al.", "e.g.", "i.e.", "vs.", "cf.", "etc.", "approx.", "no.", "Fig.", "Eq.")


# ---------------------------------------------------------------------- docstring text
def _plain(text: str) -> str:
    """``text`` without reStructuredText markup (``:class:`~a.B``` -> ``B``, ````x```` -> ``x``, ``*x*`` -> ``x``),
    its whitespace runs made single spaces."""
    text = re.sub(r":[\w:.-]+:`~?([^`<]*?)(?:\s*<[^>]*>)?`",
                  lambda m: m.group(1).rsplit(".", 1)[-1] if m.group(0).split("`")[1].startswith("~") else m.group(1),
                  text)
    text = re.sub(r"``(.+?)``", r"\1", text, flags=re.DOTALL)
    text = re.sub(r"(?<![\w`])`([^`\s][^`]*?)`(?![\w`])", r"\1", text)
    text = re.sub(r"(?<![\w*])\*(\S(?:[^*]*?\S)?)\*(?![\w*])", r"\1", text)
    return " ".join(text.split())


def _sections(cls: type) -> tuple[list[str], dict[str, str]]:
    """The paragraphs of ``cls``'s docstring before its first numpydoc section, and its sections by title."""
    doc = inspect.cleandoc(cls.__dict__.get("__doc__") or "")
    heads = list(_SECTION.finditer(doc))
    preamble = doc[:heads[0].start()] if heads else doc
    sections = {m.group(1).strip(): doc[m.end():heads[i + 1].start() if i + 1 < len(heads) else len(doc)].strip("\n")
                for i, m in enumerate(heads)}
    paragraphs = [p for p in re.split(r"\n\s*\n", preamble) if p.strip()]
    return paragraphs, sections


def _sentences(text: str) -> list[str]:
    """``text`` (plain, one line) cut into sentences: at a ``.``, ``!`` or ``?`` followed by a space, outside
    parentheses and brackets, and not the dot of an abbreviation (``et al.``, ``e.g.``)."""
    out, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth = max(depth - 1, 0)
        elif ch in ".!?" and depth == 0 and (i + 1 == len(text) or text[i + 1] == " "):
            word = text[:i + 1].rsplit(" ", 1)[-1]
            if not word.endswith(_ABBREVIATIONS):
                out.append(text[start:i + 1].strip())
                start = i + 1
    if text[start:].strip():
        out.append(text[start:].strip())
    return out


def _summary_paragraph(cls: type) -> str:
    """The first paragraph of ``cls``'s docstring, as one plain line ("" when it has none)."""
    paragraphs, _ = _sections(cls)
    return _plain(paragraphs[0]) if paragraphs else ""


def _entries(text: str) -> list[str]:
    """The entries of a ``References`` section: its bullets (``* ...``, ``- ...``), else its paragraphs."""
    if re.search(r"^[*-] ", text, re.MULTILINE):
        return [b for b in re.split(r"^[*-] ", text, flags=re.MULTILINE) if b.strip()]
    return [p for p in re.split(r"\n\s*\n", text) if p.strip()]


def _citations(cls: type) -> list[str]:
    """The papers ``cls``'s docstring cites outside its first paragraph: its ``References`` section's entries,
    then each sentence of its other paragraphs that cites one (an arXiv number, "et al.", a venue and year)."""
    paragraphs, sections = _sections(cls)
    found = [entry for p in _entries(sections.get("References", "")) for entry in _sentences(_plain(p))]
    for paragraph in paragraphs[1:]:
        found += [s for s in _sentences(_plain(paragraph)) if _CITATION.search(s)]
    return list(dict.fromkeys(found))


def _wrap(text: str, indent: int, first: str = "") -> list[str]:
    """``text`` wrapped at :data:`WIDTH`, each line indented by ``indent`` spaces (the first starting with
    ``first`` when given)."""
    pad = " " * indent
    return textwrap.wrap(text, WIDTH, initial_indent=pad + first, subsequent_indent=pad + " " * len(first),
                         break_long_words=False, break_on_hyphens=False) or [pad + first.rstrip()]


# ---------------------------------------------------------------------- types, defaults, bounds as YAML reads them
def _nested_model(tp: Any) -> type[BaseModel] | None:
    """The pydantic model a field of type ``tp`` holds (``Rule`` in ``list[Rule]``, ``AdaptConfig`` in
    ``AdaptConfig | None``), or None."""
    tp = _strip_annotated(tp)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return tp
    if typing.get_origin(tp) is typing.Literal:
        return None
    return next((m for a in typing.get_args(tp) if (m := _nested_model(a)) is not None), None)


def _literal_values(tp: Any) -> tuple[Any, ...]:
    tp = _strip_annotated(tp)
    if typing.get_origin(tp) is typing.Literal:
        return typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return tuple(v for a in typing.get_args(tp) for v in _literal_values(a))
    return ()


def _aliases(field: FieldInfo) -> str:
    """Other spellings a choice field reads as its values (``float16, fp16, half as f16``): each spelling of
    :data:`ragkit.params.SPELLINGS` that the field itself accepts, validated through its own type and validators."""
    from ragkit.params import SPELLINGS

    values = _literal_values(field.annotation)
    if not values or not field.metadata:
        return ""
    annotated: Any = typing.Annotated[(field.annotation, *field.metadata)]  # (its validators: the other spellings)
    adapter: TypeAdapter[Any] = TypeAdapter(annotated)
    read: dict[Any, list[str]] = {}
    for group in SPELLINGS:
        for alias in sorted(group - set(map(str, values))):
            try:
                got = adapter.validate_python(alias)
            except ValidationError:
                continue
            if got in values and got != alias:
                read.setdefault(got, []).append(alias)
    return "; ".join(f"{', '.join(read[v])} as {_yaml_value(v)}" for v in values if v in read)


def _field_lines(name: str, field: FieldInfo, indent: int, expand: bool) -> list[str]:
    """One parameter: ``name: type; default; bounds``, the other spellings it reads, its description, and (with
    ``expand``) the keys of the settings model it holds, one level down."""
    parts = (_type_text(field.annotation, "yaml"), _default_text(field, "yaml"), _bounds_text(field))
    head = "; ".join(p for p in parts if p)
    lines = _wrap(head, indent, f"{name}: ")
    if aliases := _aliases(field):
        lines += _wrap(f"also read: {aliases}", indent + 4)
    lines += _wrap(_plain(field.description) if field.description else _NO_DESCRIPTION, indent + 4)
    model = _nested_model(field.annotation) if expand else None
    if model is not None:
        what = f"each item of {name}" if "list of mappings" in _type_text(field.annotation, "yaml") else name
        about = _plain(inspect.cleandoc(model.__dict__.get("__doc__") or "").split("\n\n")[0])
        generated = about.startswith("Parameters of ")  # (a docstring document_params wrote: no summary of its own)
        lines += _wrap(f"Keys of {what}{': ' + about if about and not generated else ''}", indent + 4)
        for sub, sub_field in model.model_fields.items():
            lines += _field_lines(sub, sub_field, indent + 6, expand=False)
    return lines


# ---------------------------------------------------------------------- operators
def operator_table() -> list[tuple[str, str, str]]:
    """``(name, kind, summary)`` of every registered operator (plugins included), sorted by kind, then name;
    the summary is the first sentence of the class docstring, as one plain line."""
    rows = []
    for name in registry.names():
        cls = registry.get(name)
        sentences = _sentences(_summary_paragraph(cls))
        rows.append((name, str(cls.kind), sentences[0] if sentences else ""))
    return sorted(rows, key=lambda row: (row[1], row[0]))


def table_text() -> str:
    """:func:`operator_table` as aligned columns at most :data:`WIDTH` wide (a summary too long is cut with
    ``...``), followed by the structural keys."""
    rows = operator_table()
    name_w = max((len(r[0]) for r in rows), default=4)
    kind_w = max((len(r[1]) for r in rows), default=4)
    lines = []
    for name, kind, summary in rows:
        line = f"{name:<{name_w}}  {kind:<{kind_w}}  {summary}".rstrip()
        lines.append(line if len(line) <= WIDTH else line[:WIDTH - 3].rstrip() + "...")
    lines.append("")
    lines += _wrap(f"Structural keys (not operators): {', '.join(registry.structural_keys())}.", 0)
    return "\n".join(lines)


def undocumented_fields() -> list[str]:
    """The parameters of registered operators whose field has no ``description``: ``"op.field"``, and
    ``"op.field.key"`` for a key of a nested settings model (``rule_router.rules.label``)."""
    out = []
    for name in registry.names():
        for field_name, field in registry.get(name).Params.model_fields.items():
            if not field.description:
                out.append(f"{name}.{field_name}")
            model = _nested_model(field.annotation)
            for sub, sub_field in (model.model_fields.items() if model is not None else ()):
                if not sub_field.description:
                    out.append(f"{name}.{field_name}.{sub}")
    return out


#: the public modules a class defined in a private one (``ragkit._sharded``) is imported from, first first
_PUBLIC_HOMES = ("ragkit.retrievers", "ragkit.filters", "ragkit.pipelines", "ragkit.generators", "ragkit.caches",
                 "ragkit.scale", "ragkit")


def public_path(cls: type) -> str:
    """Where users import ``cls`` from: ``cls.__module__`` when no part of it is private, else the first of the
    public packages that exports that very class (``ragkit._sharded.Sharded`` -> ``ragkit.retrievers.Sharded``)."""
    import importlib

    if not any(part.startswith("_") for part in cls.__module__.split(".")):
        return f"{cls.__module__}.{cls.__qualname__}"
    for home in _PUBLIC_HOMES:
        try:
            module = importlib.import_module(home)
        except ImportError:  # (an optional part not installed)
            continue
        if getattr(module, cls.__name__, None) is cls:
            return f"{home}.{cls.__name__}"
    return f"{cls.__module__}.{cls.__qualname__}"


def _describe_operator(name: str) -> str:
    cls = registry.get(name, structural=True)
    lines = [f"{name} ({cls.kind})", f"Python: {public_path(cls)}", ""]
    summary = _summary_paragraph(cls)
    lines += _wrap(summary or "(no docstring)", 0)
    if citations := _citations(cls):
        lines += ["", "Paper:"]
        for c in citations:
            lines += _wrap(c, 2, "- ")
    fields = cls.Params.model_fields
    lines += ["", "Parameters (YAML key: type; default; bounds):" if fields else "Parameters: none."]
    for field_name, field in fields.items():
        lines += _field_lines(field_name, field, 2, expand=True)
    return "\n".join(lines)


# ---------------------------------------------------------------------- structural keys
def _structural_class(key: str) -> type:
    """The composite class the structural key ``key`` builds (``Parallel`` for ``parallel``): its ``name``."""
    from ragkit.pipelines._compose import Composite

    todo, seen = list(Composite.__subclasses__()), []
    while todo:
        c = todo.pop(0)
        seen.append(c)
        todo += c.__subclasses__()
    found = [c for c in seen if getattr(c, "name", None) == key and c.__module__.startswith("ragkit.")]
    if not found:
        raise ParamError(f"describe: no composite class is named {key!r}")
    return found[0]


def _numpydoc_params(text: str) -> dict[str, tuple[str, str]]:
    """A numpydoc ``Parameters`` section's entries: name -> (type, description)."""
    out: dict[str, tuple[str, str]] = {}
    name: str | None = None
    kind = ""
    desc: list[str] = []
    for line in text.splitlines() + [""]:
        m = re.match(r"^(\w+)\s*:\s*(.*)$", line)
        if m and not line.startswith(" "):
            if name is not None:
                out[name] = (kind, " ".join(desc))
            name, kind, desc = m.group(1), m.group(2), []
        elif line.strip():
            desc.append(line.strip())
    if name is not None:
        out[name] = (kind, " ".join(desc))
    return out


def _implicit_fuser() -> Any:
    """The fuser a parallel given no ``fuse`` makes (built by ``Parallel`` itself, around a retriever that takes
    all its defaults)."""
    from ragkit.pipelines._compose import Parallel

    for name in registry.names():
        cls = registry.get(name)
        if cls.kind == "retriever" and not any(f.is_required() for f in cls.Params.model_fields.values()):
            try:
                return Parallel([cls()]).fuse
            except ParamError:  # (a retriever that refuses its defaults alone)
                continue
    return None


def _describe_structural(key: str) -> str:
    from ragkit.pipelines._compose import MAX_LOOP_ITERS
    from ragkit.pipelines.yaml import STRUCTURAL

    cls = _structural_class(key)
    lines = [f"{key} (structural key of pipeline YAML, not an operator)", f"Python: {public_path(cls)}", ""]
    lines += _wrap(_summary_paragraph(cls), 0)
    paragraphs, sections = _sections(cls)
    for p in paragraphs[1:]:
        lines += [""] + _wrap(_plain(p), 0)
    lines += [""] + _wrap("In YAML each operator is written as its name with its parameters beneath ({name: {...}}); "
                          "a list of them is a linear pipeline.", 0)
    documented = _numpydoc_params(sections.get("Parameters", ""))
    signature = inspect.signature(cls).parameters
    keys = sorted(STRUCTURAL[key], key=lambda k: (list(signature).index(k) if k in signature else len(signature), k))
    lines += ["", "Keys (YAML key: type; default):"]
    for k in keys:
        kind, desc = documented.get(k, ("", ""))
        kind = re.sub(r",\s*(default\b.*|optional)$", "", _plain(kind))
        param = signature.get(k)
        if param is None or param.default is inspect.Parameter.empty:
            default = "required"
        elif param.default is None:
            default = "optional"
            if key == "parallel" and k == "fuse" and (fuser := _implicit_fuser()) is not None:
                default = (f"default {_yaml_value({fuser.name: fuser.params.non_default()})}: {fuser.name} with its "
                           f"own defaults ({_yaml_value(fuser.params.model_dump(mode='json'))})")
        else:
            default = f"default {_yaml_value(param.default)}"
        bounds = f">= 1, <= {MAX_LOOP_ITERS}" if (key, k) == ("loop", "max_iters") else ""
        head = "; ".join(p for p in (kind or "(type not documented)", default, bounds) if p)
        lines += _wrap(head, 2, f"{k}: ")
        lines += _wrap(_plain(desc) if desc else _NO_DESCRIPTION, 6)
    return "\n".join(lines)


def describe(name: str) -> str:
    """A plain-text reference of the registered operator ``name``, or of a structural key (``parallel``,
    ``route``, ``loop``): what it is, its summary (and the papers its docstring cites), then each parameter
    or key with its YAML type, default (or ``required``), bounds and description.

    An unknown name is a :class:`~ragkit.errors.ParamError` (a ``RagkitError``) that suggests the closest
    names; a name that is not a string an :class:`~ragkit.errors.InputTypeError`.
    """
    if not isinstance(name, str):
        raise InputTypeError(f"describe: expected an operator name or structural key (a str), got "
                             f"{type(name).__name__} {name!r:.60}")
    if name in registry.structural_keys():
        return _describe_structural(name)
    return _describe_operator(name)
