"""Pipelines as YAML: one key per operator (its registry name), its parameters beneath.

.. code-block:: yaml

    pipeline:
      - parallel:
          branches:
            - bm25: {k: 100}
            - dense: {k: 100}
          fuse:
            rrf: {k: 60}
      - top_k: {k: 10}

Structural keys: ``parallel`` (``branches``, ``fuse``, ``names``), ``route`` (``router``,
``branches``, ``default``) and ``loop`` (``body``, ``until``, ``max_iters``).  A branch or
body is one node or a list of nodes (a linear pipeline).  A fuser (``rrf``, ``weighted``)
belongs in a parallel's ``fuse:``, never as a step of its own: the Python idiom
``(a + b) | RRF(k=60)`` is written ``parallel: {branches: [a, b], fuse: {rrf: {k: 60}}}``
(a one-step file holding only a fuser, as ``Operator.to_yaml`` writes it, is read back).
Route labels are strings: quote ``"yes":``, ``"no":``, ``"on":``, ``"1":`` (YAML 1.1 reads
them unquoted as booleans or numbers); an empty list ``[]`` as a route branch or default
passes its queries through unchanged.  Only ``yaml.safe_load`` is
used: tags that construct Python objects are refused.  The whole file is validated
(every operator's parameters through its pydantic model) before anything is fitted, and
an error starts with the path inside the file, e.g.
``pipeline[1].parallel.branches[0].dense.k: expected a positive integer, got -3``; every
problem of the file (its top-level keys, every step, every branch, fuser, router, default,
body, judge and key of a parallel / route / loop) is reported in one error, one line each, and
a file's problems start with their line in it (``p.yaml: line 6: pipeline[0].bm25.k: ...``).
The top-level ``description:`` is free text, kept by :func:`dump_yaml`.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import sys
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, TypeVar, cast

import yaml

from ragkit import registry
from ragkit.errors import ConfigError, InputTypeError, ParamError
from ragkit.operator import Operator
from ragkit.params import LONG_INT_DIGITS, QUOTE_AS_WRITTEN, validate_params
from ragkit.pipelines._checks import fuse_weights_problem, route_label_problem_at, unranked_router
from ragkit.pipelines._compose import (
    DEFAULT_MAX_ITERS,
    Composite,
    Loop,
    Parallel,
    Pipeline,
    Route,
    _second_generator,
    branch_names_problem,
    checked_nodes,
    max_iters_problem,
    unique_names,
)

__all__ = ["load_yaml", "dump_yaml", "to_node", "build", "walk_leaves", "parse_yaml_text"]

STRUCTURAL = {
    "parallel": {"branches", "fuse", "names"},
    "route": {"router", "branches", "default"},
    "loop": {"body", "until", "max_iters"},
}
TOP_KEYS = {"pipeline", "version", "description"}

LeafFactory = Callable[[str, type[Operator], Mapping[str, Any]], Operator]


def _default_leaf(path: str, cls: type[Operator], params: Mapping[str, Any]) -> Operator:
    return cls(validate_params(cls.Params, params, cls.name, path.rsplit(".", 1)[0], source="yaml"))


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key repeated in one mapping (YAML keeps the last silently),
    and reads numbers as YAML 1.2 does.

    Merge keys (``{<<: *base, b: 0.8}``) work as in ``yaml.safe_load``: only the keys written
    in the mapping itself are checked, and they override the merged ones; a second ``<<`` in one
    mapping is refused (YAML 1.1 keeps one of them silently; merge several with ``<<: [*a, *b]``).
    YAML 1.1's octal and base-60 numbers are not numbers here (``k: 010`` was 8 and ``1:30`` was
    90.0; now ``010`` is the text '010', which a parameter reads as 10, and ``1:30`` is refused by
    the parameter as not a number), and an exponent needs no dot (``1e-3`` is a float, as in
    YAML 1.2 and JSON).
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        merges = 0
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                merges += 1
                if merges > 1:
                    raise yaml.constructor.ConstructorError(
                        None, None, "'<<' (a merge key) appears twice in one mapping, and YAML would keep only one: "
                        "merge several mappings with one '<<: [*a, *b]'", key_node.start_mark)
                continue
            key = self.construct_object(key_node, deep=deep)
            try:
                dup = key in seen
            except TypeError:  # an unhashable key; the base class reports it
                break
            if dup:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice in one mapping", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        """SafeLoader's integer, but one written with more than :data:`~ragkit.params.LONG_INT_DIGITS`
        digits, in any base, is refused with its line and column before it is built: no parameter takes one,
        and a long one in hex or binary (which ``sys.get_int_max_str_digits()`` does not bound) would be built
        and then fail to print in the error about it; one Python cannot read is refused the same way."""
        text = str(node.value).replace("_", "").lstrip("+-")
        digits = len(text[2:] if text[:2].lower() in ("0x", "0b", "0o") else text)
        if digits > LONG_INT_DIGITS:
            raise yaml.constructor.ConstructorError(
                None, None, f"an integer of {digits:,} digits, more than any parameter takes (a few digits)",
                node.start_mark)
        try:
            return int(super().construct_yaml_int(node))
        except ValueError:
            raise yaml.constructor.ConstructorError(None, None, f"{node.value!r} is not an integer",
                                                    node.start_mark) from None


_INT, _FLOAT = "tag:yaml.org,2002:int", "tag:yaml.org,2002:float"
_UniqueKeyLoader.yaml_implicit_resolvers = {  # SafeLoader's, but for its int and float patterns (below)
    first: [(tag, rx) for tag, rx in resolvers if tag not in (_INT, _FLOAT)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_UniqueKeyLoader.add_constructor(_INT, _UniqueKeyLoader.construct_yaml_int)
_UniqueKeyLoader.add_implicit_resolver(  # decimal, 0x hex, 0b binary; no 010 octal, no 1:30 base 60
    _INT, re.compile(r"^(?:[-+]?0b[0-1_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+)$"), list("-+0123456789"))
_UniqueKeyLoader.add_implicit_resolver(  # 1.5, 1.5e-3, 1e-3, .5, .inf, .nan; no base 60
    _FLOAT, re.compile(r"^(?:[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+|[-+]?[0-9][0-9_]*\.[0-9_]*"
                       r"|[-+]?\.[0-9][0-9_]*(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
    list("-+0123456789."))


class _Dumper(yaml.SafeDumper):
    """``yaml.SafeDumper`` that quotes every string :class:`_UniqueKeyLoader` would read as something
    else: its implicit resolvers are SafeDumper's (YAML 1.1: ``010``, ``1:30``, ``yes``) and the
    loader's (YAML 1.2 numbers: ``1e3``, ``1e-3``), so a string either reads as a number or a boolean
    is written quoted (``'1e3'`` was written bare and read back as 1000.0).  A string holding U+0085
    (NEL) is written double-quoted, the NEL as ``\\N``: PyYAML writes it raw in a plain or single-quoted
    scalar, where YAML reads it as a line break and folds it to a space (``'red\\x85?apples'`` came back
    ``'red ?apples'``); it is the only character that did (U+0000 to U+3000 and a few beyond were dumped
    and read back)."""

    def represent_str(self, data: str) -> yaml.ScalarNode:
        """SafeDumper's string node, double-quoted when ``data`` holds U+0085."""
        if "\x85" in data:
            return self.represent_scalar("tag:yaml.org,2002:str", data, style='"')
        return super().represent_str(data)


_Dumper.add_representer(str, _Dumper.represent_str)
_Dumper.yaml_implicit_resolvers = {first: list(resolvers)
                                   for first, resolvers in yaml.SafeDumper.yaml_implicit_resolvers.items()}
for _first, _resolvers in _UniqueKeyLoader.yaml_implicit_resolvers.items():
    _Dumper.yaml_implicit_resolvers.setdefault(_first, []).extend(
        r for r in _resolvers if r not in _Dumper.yaml_implicit_resolvers.get(_first, []))


def _what_is(path: Path) -> str | None:
    """``"file"``, ``"folder"`` or ``None`` (nothing there, or a string no file system takes as a path)."""
    try:
        return "file" if path.is_file() else "folder" if path.is_dir() else None
    except (OSError, ValueError):  # a name too long, a NUL byte
        return None


def _not_a_file(path: Path | str, kind: str | None) -> ConfigError:
    """The error for a pipeline source that names a folder (``kind == "folder"``) or nothing."""
    if kind == "folder":
        if (Path(path) / "manifest.json").is_file():
            hint = f"a saved pipeline: load it with Pipeline.load({str(path)!r})"
        elif (Path(path) / "params.json").is_file():
            hint = f"a saved operator: load it with Operator.load({str(path)!r})"
        else:
            hint = "not a ragkit save either (no manifest.json or params.json); expected a pipeline YAML file"
        return ConfigError(f"{path} is a folder, {hint}", path=str(path))
    return ConfigError(f"{path}: no such file or folder (expected a pipeline YAML file, or YAML text with a "
                       "'pipeline:' key; a saved pipeline folder loads with Pipeline.load(folder) or "
                       "RagkitRetriever(pipeline=folder))", path=str(path))


def _read_text(path: Path | str) -> str:
    """A pipeline file's text; one that is not UTF-8 is a :class:`ConfigError` naming it."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 (byte {e.object[e.start]:#04x} at offset {e.start}); pipeline YAML "
                          "files are UTF-8 text", path=str(path)) from None


#: The most nodes a pipeline document may expand to through its aliases (a few hundred bytes of
#: nested aliases expand to billions: every later walk of the document would take hours).
_MAX_EXPANDED_NODES = 1_000_000


def _cycle(node: Any, where: str) -> None:
    """Refuse a document that contains itself (an alias to an anchor around it, ``&p [.., *p]``):
    it has no end, and building it would recurse until Python gives up; and one whose aliases
    expand it past :data:`_MAX_EXPANDED_NODES`.  Each shared node is visited once (its expanded
    size memoised), so the check is linear in the text, not in the expansion."""
    size: dict[int, int] = {}

    def visit(n: Any, inside: set[int]) -> int:
        if not isinstance(n, (Mapping, list)):
            return 1
        if id(n) in size:
            return size[id(n)]
        if id(n) in inside:
            raise ConfigError(f"{where}: not valid pipeline YAML: an alias refers to a node that contains it "
                              "(a structure inside itself has no end)")
        inside.add(id(n))
        total = 1 + sum(visit(child, inside) for child in (n.values() if isinstance(n, Mapping) else n))
        inside.discard(id(n))
        size[id(n)] = total
        if total > _MAX_EXPANDED_NODES:
            raise ConfigError(f"{where}: not a pipeline YAML this library builds: its aliases expand it to more "
                              f"than {_MAX_EXPANDED_NODES:,} values (aliases nested in aliases)")
        return total

    visit(node, set())


def _safe_load(text: str, where: str) -> tuple[Any, yaml.Node | None]:
    """The document of ``text`` and its composed node tree (for the line numbers of later errors)."""
    loader = _UniqueKeyLoader(text)  # a SafeLoader: no object tags
    try:
        node = loader.get_single_node()
        doc = loader.construct_document(node) if node is not None else None
        _cycle(doc, where)
        return doc, node
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        loc = f" line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        context = getattr(e, "context", None)
        if context and problem.startswith("but "):  # "expected a single document in the stream, but found another"
            problem = f"{context}, {problem}"
        if "could not determine a constructor" in str(e):
            problem = f"{problem}; YAML tags that construct objects are not allowed in pipeline files"
        misaligned = _indent_problem(e, text)
        if misaligned:  # a line indented to no level of the lines above it: said in plain words
            problem = misaligned
        raise ConfigError(f"{where}:{loc}: not valid pipeline YAML: {problem}{_syntax_hint(e)}") from None
    except RecursionError:  # PyYAML composes and constructs nested collections recursively
        raise _too_deep(where) from None
    finally:
        loader.dispose()


def _too_deep(where: str) -> ConfigError:
    """The error for a document nested deeper than Python's recursion limit lets PyYAML or the builder follow."""
    return ConfigError(f"{where}: nested too deeply: its lists and mappings (parallel / route / loop nodes, branches, "
                       f"steps) are inside each other more levels deep than this reader follows (Python's recursion "
                       f"limit, {sys.getrecursionlimit():,} calls); a pipeline nests them a few levels deep")


#: what PyYAML's context of an unclosed construct opened, and what closes it
_UNCLOSED = {"flow mapping": ("'{'", "'}'"), "flow sequence": ("'['", "']'"),
             "quoted scalar": ("quote", "the closing quote")}


def _syntax_hint(e: yaml.YAMLError) -> str:
    """Where the mistake may be when it is not where the parser gave up: the ``{``, ``[`` or quote
    an error's context opened (PyYAML reports the line where it noticed, often the next one), or
    that YAML indents with spaces only."""
    context, mark = getattr(e, "context", None) or "", getattr(e, "context_mark", None)
    if "'\\t'" in (getattr(e, "problem", None) or ""):  # "found character '\t' that cannot start any token"
        return "; indent with spaces: YAML does not allow tabs"
    for what, (opened, closer) in _UNCLOSED.items():
        if what in context and mark is not None:
            where = f"line {mark.line + 1}, column {mark.column + 1}"
            return f"; the {opened} at {where} is not closed (is {closer} missing?)"
    return ""


#: the start of a line: its indentation, its list dashes ('- '), and a key ('name:') after them
_LINE = re.compile(r"(?P<indent> *)(?P<dashes>(?:-(?: +|$))*)"
                   r"(?:(?P<key>[^\s#:{}\[\],'\"][^#:]*|'[^']*' *|\"[^\"]*\" *):(?:\s|$))?")
# (greedy up to the one ':' a key can reach, its trailing spaces stripped below: a lazy key before ' *:'
# rescanned a run of spaces at every step, seconds for a line of 100,000)


def _line_parts(line: str) -> tuple[int, list[int], tuple[int, str] | None]:
    """A line's first column, the columns of its dashes, and its key's column and name (None: no key)."""
    m = _LINE.match(line)
    assert m is not None  # (every part of the pattern may be empty)
    dashes, col = [], m.end("indent")
    for d in re.finditer(r"-( +|$)", m.group("dashes")):
        dashes.append(col + d.start())
    key = (m.start("key"), m.group("key").rstrip(" ").strip("'\"")) if m.group("key") else None
    return m.end("indent"), dashes, key


def _indent_problem(e: yaml.YAMLError, text: str) -> str | None:
    """In plain words, for a line the parser stopped at because it lines up with no list or mapping above
    it (PyYAML: "expected <block end>, but found ..."): which list or mapping it breaks off, where that
    one started, and what the line should line up with; None for any other error."""
    problem, context = getattr(e, "problem", None) or "", getattr(e, "context", None) or ""
    pmark, cmark = getattr(e, "problem_mark", None), getattr(e, "context_mark", None)
    if (not problem.startswith("expected <block end>, but found") or pmark is None or cmark is None
            or context not in ("while parsing a block collection", "while parsing a block mapping")):
        return None
    lines = text.splitlines()
    if not pmark.line < len(lines) or not cmark.line < len(lines):
        return None
    pl, pc = pmark.line, pmark.column
    _, dashes_here, key_here = _line_parts(lines[pl])
    is_item = pc in dashes_here
    # what lines up above it: the nearest key and list dash at each column, looking up past no line
    # indented less than them (those deeper are inside something that already ended)
    keys: dict[int, tuple[int, str]] = {}
    dashes: dict[int, int] = {}
    limit = sys.maxsize  # (the first line above sets it)
    for i in range(pl - 1, -1, -1):
        stripped = lines[i].strip()
        if not stripped or stripped.startswith("#"):
            continue
        first, line_dashes, key = _line_parts(lines[i])
        if first > limit:
            continue
        limit = first
        for d in line_dashes:
            dashes.setdefault(d, i)
        if key is not None:
            keys.setdefault(key[0], (i, key[1]))

    def at(line: int, col: int) -> str:
        return f"line {line + 1}, column {col + 1}"

    def key_at(col: int) -> str:
        line, name = keys[col]
        return f"'{name}:' ({at(line, col)})"

    cut = lines[cmark.line][cmark.column:].strip()
    start = _line_parts(lines[cmark.line][cmark.column:])[2]
    shown = f"'- {start[1]}:'" if cut.startswith("-") and start else f"'{start[1]}:'" if start else f"{cut:.30}"
    in_list = context.endswith("collection")
    opened = f"the {'list' if in_list else 'mapping'} that starts at {at(cmark.line, cmark.column)} ({shown})"
    if is_item:  # '- x' where a key of a mapping (or its end) was expected
        what = f"'- {key_here[1]}:'" if key_here else "this list item"
        expected = "its next item or its end" if in_list else "that mapping's next key or its end"
        said = f"{what} is a list item, indented to column {pc + 1} inside {opened}, where {expected} is expected"
        others = sorted((c for c in dashes if c != pc), key=lambda c: (abs(c - pc), c))
        if others:
            c = others[0]
            step = _line_parts(lines[dashes[c]])[2]
            item = f"'- {step[1]}:'" if step else "'-'"
            return (f"{said}: a step '- x' lines up with the other steps of its list: put its '-' at column "
                    f"{c + 1}, like {item} at {at(dashes[c], c)}")
        return f"{said}: a list starts on the line after its key ('steps:' then '- x' lines below it)"
    if key_here is None or key_here[0] != pc:
        return None
    name = key_here[1]
    if pc in dashes and pc not in keys:
        said = (f"'{name}:' lines up with the '- ' of the items of {opened} but is not one of them (it has no "
                f"'- '), nor does it line up with the keys of the mapping around that list")
    elif pc not in keys:
        deeper = min((c for c in keys if c > pc), default=None)
        said = (f"'{name}:' at column {pc + 1} lines up with no mapping above it: it is deeper than the "
                f"{'items' if in_list else 'keys'} of {opened}"
                f"{f' and not as deep as {key_at(deeper)}' if deeper is not None else ''}")
    else:
        said = f"'{name}:' does not line up with {opened}"
    forms = [form for form, form_keys in STRUCTURAL.items() if name in form_keys]

    def parent(c: int) -> str | None:  # the key a key at column c is inside: the nearest shallower one
        return keys[max(p for p in keys if p < c)][1] if any(p < c for p in keys) else None

    # a key of the same form written beside it (its parent that form's name): the column to take
    siblings = sorted((c for c in keys if c != pc and keys[c][1] != name and parent(c) in forms
                       and keys[c][1] in STRUCTURAL[str(parent(c))]), key=lambda c: -keys[c][0])
    if siblings:
        c = siblings[0]
        return f"{said}: '{name}' is a key of {parent(c)}, like '{keys[c][1]}': line it up with {key_at(c)}"
    owner = [c for c in keys if keys[c][1] in forms]
    if owner:  # no key of its form yet: it goes under the form's name
        c = max(owner, key=lambda c: keys[c][0])
        return f"{said}: '{name}' is a key of {keys[c][1]}: indent it under {key_at(c)}, deeper than it"
    near = sorted((c for c in keys if c != pc), key=lambda c: (abs(c - pc), c))[:2]
    if not near:
        return said
    choices = " or ".join(key_at(c) for c in sorted(near, reverse=True))
    item = " (or, if it is an item of that list, start it with '- ')" if pc in dashes and pc not in keys else ""
    return (f"{said}: the keys of one mapping line up in one column: line it up with the key it belongs beside, "
            f"{choices}{item}")


def check_yaml_source(source: object, where: str, *, mapping: bool = True) -> None:
    """Refuse a ``source`` that is no YAML file path (a ``str`` or ``os.PathLike``), no YAML text and (with
    ``mapping``) no parsed mapping: an :class:`~ragkit.errors.InputTypeError` (a ``TypeError``) naming
    ``where`` (``"Pipeline.from_yaml: source"``) and the value, instead of pathlib's "expected str, bytes or
    os.PathLike object, not int"."""
    if isinstance(source, (str, os.PathLike)) or (mapping and isinstance(source, Mapping)):
        return
    what = ("a YAML file path (a str or pathlib.Path), YAML text or a parsed mapping" if mapping else
            "a YAML file path (a str or pathlib.Path)")
    raise InputTypeError(f"{where}: expected {what}, got {type(source).__name__} {source!r:.80}")


def parse_yaml_text(source: str | os.PathLike[str]) -> tuple[Any, str]:
    """Read YAML from a path or text with ``safe_load``; errors name the file and line.

    A :class:`~pathlib.Path` is a file.  A string is a file when it names an existing file (any
    suffix); one that names a folder, or a one-line string that looks like a path (a ``/`` or
    ``\\``, or a ``.yaml`` / ``.yml`` ending) and names nothing, is refused with that said.  Any
    other string is YAML text.  Returns ``(document, where)``: the file name or ``"<text>"``.
    """
    check_yaml_source(source, "parse_yaml_text: source", mapping=False)
    doc, where, _ = _parse(source)
    return doc, where


def _loaded(text: str, where: str) -> tuple[Any, str, yaml.Node | None]:
    doc, node = _safe_load(text, where)
    return doc, where, node


def _parse(source: str | os.PathLike[str]) -> tuple[Any, str, yaml.Node | None]:
    """:func:`parse_yaml_text`, with the document's composed node tree as well."""
    if not isinstance(source, str):
        path = Path(source)
        kind = _what_is(path)
        if kind != "file":
            raise _not_a_file(path, kind)
        return _loaded(_read_text(path), str(path))
    line = source.strip()
    if not line or "\n" in line:  # several lines: YAML text
        return _loaded(source, "<text>")
    kind = _what_is(Path(line))
    if kind == "file":
        return _loaded(_read_text(line), line)
    if kind == "folder":
        raise _not_a_file(line, kind)
    named_yaml = line.lower().endswith((".yaml", ".yml"))
    try:
        doc, where, node = _loaded(source, "<text>")
    except ConfigError:
        if named_yaml:
            raise _not_a_file(line, None) from None
        raise
    if not isinstance(doc, (Mapping, list)) and (named_yaml or "/" in line or "\\" in line):
        raise _not_a_file(line, None)
    return doc, where, node


def _combined(problems: list[ConfigError]) -> ConfigError:
    """One error for several: their messages one per line, the path the first one's; the unknown-operator
    advice (how operators of your own become known, the registered names) only on the last line that has it."""
    if len(problems) == 1:
        return problems[0]
    # a problem may itself be several lines (a parallel's branches, combined before): the advice is cut
    # from a line to that line's end only, so no later line of the same problem is lost
    lines = [line for e in problems for line in str(e).split("\n")]
    advised = [i for i, line in enumerate(lines) if registry.PLUGIN_HINT in line]
    for i in advised[:-1]:
        lines[i] = lines[i][:lines[i].index(registry.PLUGIN_HINT)].rstrip()
    return ConfigError("\n".join(lines), path=problems[0].path)


def load_yaml(source: str | os.PathLike[str] | Mapping[str, Any], make_leaf: LeafFactory | None = None) -> Pipeline:
    """Validate and build a pipeline from a YAML file path, YAML text or an already-parsed mapping.

    A string is read as a file when it names one (see :func:`parse_yaml_text`).  Every problem
    of the file (top-level keys, every step, every part of a parallel / route / loop) is
    reported in one :class:`~ragkit.errors.ConfigError`, one line each, after the file's name.
    """
    check_yaml_source(source, "load_yaml: source")
    node: yaml.Node | None = None
    if isinstance(source, Mapping):
        doc, where = source, "<mapping>"
    else:
        doc, where, node = _parse(source)
    if isinstance(doc, list):
        doc = {"pipeline": doc}
    if doc is None:  # an empty file, or one of comments only
        raise ConfigError(f"{where}: holds no pipeline (nothing but blanks or comments); expected a mapping with "
                          "a 'pipeline' key, e.g. 'pipeline: [{bm25: {k: 100}}]'")
    if not isinstance(doc, Mapping):
        also = ""
        if isinstance(doc, str) and isinstance(source, str) and "\n" not in source.strip():
            step = _as_step_hint(doc, None)  # (bm25 alone: where an operator goes)
            also = " (and no file or folder has that name)" + (f"; it is {step[2:-1]}" if step else "")
        raise ConfigError(f"{where}: expected a mapping with a 'pipeline' key, got {type(doc).__name__} {doc!r:.60}"
                          f"{also}")
    if _is_eval_result(doc):
        shown = where if not where.startswith("<") else "RESULT.json"
        raise ConfigError(f"{where}: this is a ragkit eval result file (it has {', '.join(_EVAL_RESULT_KEYS)}), not "
                          "a pipeline file; the pipeline it ran is under its 'pipeline' key, as YAML text: write "
                          f"that to a file of its own (e.g. jq -r .pipeline {shown} > pipeline.yaml) and give that")
    try:
        return _load_doc(doc, make_leaf or _default_leaf)
    except RecursionError:  # building recurses into every parallel / route / loop and list
        raise _too_deep(where) from None
    except ConfigError as e:
        if node is None:  # a mapping: the message's path is all there is
            raise
        message = _with_lines(str(e), node, lines=not where.startswith("<"))  # a file's lines, for the editor
        if where.startswith("<"):  # YAML text
            if message == str(e):
                raise
            raise ConfigError(message, path=e.path) from None
        raise ConfigError(f"{where}: {message}" if "\n" not in message else f"{where}:\n{message}",
                          path=e.path) from None


_Op = TypeVar("_Op", bound=Operator)


def unfitted_copy(op: _Op) -> _Op:
    """A new, unfitted ``op`` of the same steps and parameters: its YAML read back (a pipeline as a pipeline, an
    operator as that operator), without what it was fitted on or learned; of a loaded saved folder, the pipeline it
    was fitted as.  RagkitRetriever's refits and ``ragkit train``'s held-out report fit such copies (a saved
    ``--pipeline`` folder is loaded, its checksums verified, once)."""
    copy = load_yaml(op.to_yaml())
    return cast(_Op, copy if isinstance(op, Pipeline) else copy.steps[0])


#: the keys by which a ``ragkit eval -o`` result is told from a pipeline file (it has 'pipeline' too)
_EVAL_RESULT_KEYS = ("metrics", "n_queries", "dataset", "split")


def _is_eval_result(doc: Mapping[Any, Any]) -> bool:
    """Whether ``doc`` is what ``ragkit eval -o`` writes (its pipeline is YAML text under ``pipeline``)."""
    return all(k in doc for k in _EVAL_RESULT_KEYS) and ("per_query" in doc or "subsets" in doc)


_INDEX = re.compile(r"\[(\d+)\]")
#: what may follow the part of a problem's path found in the document: keys it does not hold (a
#: parameter left out, a missing key), then ': ' and the problem
_PATH_TAIL = re.compile(r"(?:\.[^\s.\[\]:]+|\[\d+\])*: ")


def _keys(node: yaml.MappingNode) -> list[tuple[str, int, yaml.Node]]:
    """``(key text, line, value)`` of a mapping node's keys, its own before those it merges (``<<:``)."""
    own: list[tuple[str, int, yaml.Node]] = []
    merged: list[tuple[str, int, yaml.Node]] = []
    for key, value in node.value:
        if key.tag == "tag:yaml.org,2002:merge":
            for m in value.value if isinstance(value, yaml.SequenceNode) else [value]:
                if isinstance(m, yaml.MappingNode):
                    merged += _keys(m)
        elif isinstance(key, yaml.ScalarNode):
            own.append((key.value, key.start_mark.line + 1, value))
    return own + merged


def _step(node: yaml.Node, text: str, pos: int) -> tuple[int, int, yaml.Node] | None:
    """The next step of a problem's path in ``text`` at ``pos`` that ``node`` holds: ``(end, line, child)``.
    A mapping key is matched as written in the document, the longest first, so that a route label with a
    space, ': ' or '.' in it (``short query``, ``x: y``) is one step."""
    if isinstance(node, yaml.SequenceNode):
        m = _INDEX.match(text, pos)
        if m is None or int(m.group(1)) >= len(node.value):
            return None
        item = node.value[int(m.group(1))]
        return m.end(), item.start_mark.line + 1, item
    if not isinstance(node, yaml.MappingNode):
        return None
    dot = "." if pos else ""  # the top-level keys start the path
    best: tuple[int, int, yaml.Node] | None = None
    for key, line, value in _keys(node):
        end = pos + len(dot) + len(key)
        if text.startswith(dot + key, pos) and (end == len(text) or text[end] in ".[:") and (
                best is None or end > best[0]):
            best = end, line, value
    return best


def _locate(root: yaml.Node, text: str) -> tuple[int, yaml.Node | None] | None:
    """The line of the node whose path ``text`` (one problem, ``<path>: <what>``) starts with, and that
    node when the whole path is found in the document (else the line of the deepest node it leads to,
    and None); None when ``text`` starts with no path into the document."""
    node, pos, line = root, 0, None
    if isinstance(root, yaml.SequenceNode) and text.startswith("pipeline["):  # a file that is the list alone
        pos = len("pipeline")
    while (step := _step(node, text, pos)) is not None:
        pos, line, node = step
    if line is None or not _PATH_TAIL.match(text, pos):
        return None
    return line, node if text.startswith(": ", pos) else None


def _with_lines(message: str, root: yaml.Node, lines: bool = True) -> str:
    """``message`` with, before each problem's path, the file's line of the node it names (``line 3:
    pipeline[0].bm25.k: ...``; with ``lines``), and a number that YAML read where a string is expected
    quoted as it is written in the file (``label: 1e3`` is not 1000.0 to its author)."""
    out = []
    for text in message.split("\n"):
        found = _locate(root, text)
        if found is not None:
            at, node = found
            if QUOTE_AS_WRITTEN in text and isinstance(node, yaml.ScalarNode) and node.style is None:
                written = json.dumps(node.value, ensure_ascii=False)
                text = text.replace(QUOTE_AS_WRITTEN, f"{QUOTE_AS_WRITTEN}: {written}")
            if lines:
                text = f"line {at}: {text}"
        out.append(text)
    return "\n".join(out)


def _as_step_hint(name: Any, body: Any) -> str:
    """For a top-level key (or a whole document) ``name`` that is an operator's name or a structural key
    (``bm25: {k: 3}``, ``bm25``): where it goes, `` (an operator: a pipeline file lists its steps under
    'pipeline:', e.g. `pipeline: [bm25: {k: 3}]`)``; else ``""``."""
    if not isinstance(name, str) or (name not in STRUCTURAL and name not in registry.names()):
        return ""
    if isinstance(body, Mapping):
        step = _flow_step({name: dict(body)})
    elif name in STRUCTURAL:
        step = f"{name}: {{...}}"
    else:
        step = _written(name)
    what = f"a {name}: node" if name in STRUCTURAL else "an operator"
    return f" ({what}: a pipeline file lists its steps under 'pipeline:', e.g. `pipeline: [{step}]`)"


def _load_doc(doc: Mapping[str, Any], make_leaf: LeafFactory) -> Pipeline:
    """The pipeline of a parsed document; its top-level problems and its steps' together in one error."""
    problems: list[ConfigError] = []
    pipe: Pipeline | None = None
    # x-... keys are the file's own (Docker Compose's and OpenAPI's extension keys): a place for shared anchors
    unknown = [str(key) for key in doc if str(key) not in TOP_KEYS and not str(key).startswith("x-")]
    misspelt = False  # an unknown key close to 'pipeline' (a missing 'pipeline' is then not reported again)
    for bad in unknown:
        close = difflib.get_close_matches(bad, sorted(TOP_KEYS), n=1)
        step = _as_step_hint(bad, doc[bad])
        misspelt = misspelt or close == ["pipeline"] or bool(step)  # (the step's hint says where 'pipeline:' goes)
        hint = step or (f" (did you mean {close[0]!r}?)" if close else "")
        problems.append(ConfigError(f"{bad}: unknown top-level key{hint}; expected one of {sorted(TOP_KEYS)} "
                                    "(or an 'x-' key of your own, e.g. x-defaults: &d {...} to hold anchors)",
                                    path=bad))
    description = doc.get("description")
    if description is not None and not isinstance(description, str):
        problems.append(ConfigError(f"description: expected text, got {type(description).__name__} "
                                    f"{description!r:.60}", path="description"))
    version = doc.get("version", 1)
    if version != 1 or not isinstance(version, int) or isinstance(version, bool):
        problems.append(ConfigError(
            f"version: expected 1 (the pipeline file format this ragkit reads), got {version!r}", path="version"))
    steps = doc.get("pipeline")
    if "pipeline" not in doc:
        if not misspelt:
            problems.append(ConfigError("pipeline: missing; a pipeline file needs a 'pipeline:' list of operators",
                                        path="pipeline"))
    elif not isinstance(steps, list) or not steps:
        hint = _list_hint(steps, "pipeline") or (
            ": list the steps under it, each on its own line starting with '- ', or as `pipeline: [bm25: {k: 100}, "
            "top_k: {k: 10}]`" if steps is None or steps == [] else
            f": a list of steps, each an operator's name mapped to its parameters, e.g. `pipeline: "
            f"[{_written(steps)}]`" if isinstance(steps, str) and steps in registry.names() else "")
        problems.append(ConfigError(f"pipeline: expected a non-empty list of operators, got {steps!r:.60}"
                                    f"{';' + hint[1:] if hint else ''}", path="pipeline"))
    else:
        try:
            pipe = build_list(steps, "pipeline", make_leaf, lone_fuser_ok=True)
        except ConfigError as e:
            problems.append(e)
        else:
            unranked = unranked_router(pipe)
            if unranked is not None:
                problems.append(unranked)
    if problems or pipe is None:  # in the order their top-level keys are written (a missing one last)
        rank = {str(k): i for i, k in enumerate(doc)}
        raise _combined(sorted(problems, key=lambda e: rank.get(re.split(r"[.\[]", e.path, maxsplit=1)[0], len(rank))))
    pipe.description = description
    return pipe


def _build_all(nodes: list[tuple[Any, str]], make_leaf: LeafFactory, steps: bool = False) -> list[Operator]:
    """Build sibling nodes ``(node, path)``; the problems of all of them are reported together, one
    line each (the error's ``path`` is the first problem's).  ``steps``: the nodes are the
    consecutive steps of one list, so each step's error can name the step before it."""
    built, problems = [], []
    for i, (x, where) in enumerate(nodes):
        try:
            built.append(_branch(x, where, make_leaf, prev=nodes[i - 1] if steps and i else None))
        except ConfigError as e:
            problems.append(e)
    if problems:
        raise _combined(problems)
    return built


def build_list(items: list[Any], path: str, make_leaf: LeafFactory, *, lone_fuser_ok: bool = False) -> Pipeline:
    """A list of steps as a :class:`Pipeline` (every step's problems reported at once).

    ``lone_fuser_ok``: a list of one fuser is accepted (the whole file ``Operator.to_yaml``
    writes for a fuser); anywhere else a fuser step is refused (see :func:`_misplaced_fuser`).
    """
    if not items:
        raise ConfigError(f"{path}: expected a non-empty list of operators, got []", path=path)
    if lone_fuser_ok and len(items) == 1 and not isinstance(items[0], list):
        return Pipeline([build(items[0], f"{path}[0]", make_leaf)])
    steps = _build_all([(x, f"{path}[{i}]") for i, x in enumerate(items)], make_leaf, steps=True)
    second = _second_generator(steps, path)  # (Pipeline refuses it too: here, with the list's place in the file)
    if second is not None:
        raise ConfigError(str(second), path=second.path)
    return Pipeline(steps)


def _branch(x: Any, path: str, make_leaf: LeafFactory, prev: tuple[Any, str] | None = None) -> Operator:
    """A step, branch or body at ``path``: a list (linear pipeline) or one node; ``prev`` is the
    ``(node, path)`` of the step before it in the same list, if any."""
    if isinstance(x, list):
        return build_list(x, path, make_leaf)
    op = build(x, path, make_leaf)
    if op.kind == "fuser":
        raise _misplaced_fuser(op, f"{path}.{op.name}", prev)
    if op.kind in _CONTROL_HOMES:
        raise _misplaced_control(op, f"{path}.{op.name}")
    return op


#: where a judge and a router belong: ``(the key that takes it, an example)``; as a step of its own
#: one would only write a value (``done``, ``label``) that nothing reads
_CONTROL_HOMES = {
    "judge": ("a loop's 'until:'; it decides when the loop stops",
              "`- loop: {{body: [...], until: {op}, max_iters: 3}}`"),
    "router": ("a route's 'router:'; it picks each query's branch",
               "`- route: {{router: {op}, branches: {{name: [...], other: [...]}}}}`"),
}


def _misplaced_control(op: Operator, here: str) -> ConfigError:
    """The error for a judge or a router used as a step: it would run and change nothing."""
    home, example = _CONTROL_HOMES[op.kind]
    return ConfigError(f"{here}: a {op.kind} is not a step of its own (it would change nothing); it belongs in "
                       f"{home}: {example.format(op=_flow({op.name: op.params.non_default()}))}", path=here)


def _flow(node: Any) -> str:
    """``node`` as one line of flow-style YAML."""
    return yaml.dump(node, Dumper=_Dumper, default_flow_style=True, sort_keys=False, width=1 << 16).strip()


def _parallel_body(node: Any) -> Mapping[str, Any] | None:
    """The body of a ``parallel:`` node (``{}`` when empty), else ``None``."""
    if not isinstance(node, Mapping) or len(node) != 1 or "parallel" not in node:
        return None
    body = node["parallel"]
    return body if isinstance(body, Mapping) else {}


def _misplaced_fuser(op: Operator, here: str, prev: tuple[Any, str] | None) -> ConfigError:
    """The error for a fuser used as a step: a fuser reads the rankings of a parallel's branches,
    which exist only inside that parallel, so it would fail on the first search."""
    fuse = _flow({op.name: op.params.non_default()})
    body = _parallel_body(prev[0]) if prev is not None else None
    if prev is None or body is None:
        return ConfigError(
            f"{here}: a fuser is not a step of its own; it fuses the rankings of a parallel's branches, so write "
            f"it as that parallel's 'fuse:', e.g. `- parallel: {{branches: [...], fuse: {fuse}}}`", path=here)
    if body.get("fuse") is not None:
        return ConfigError(
            f"{here}: a fuser is not a step of its own, and the parallel before it ({prev[1]}) already fuses "
            f"its branches with 'fuse: {_flow(body['fuse'])}'; put this fuser there instead "
            f"(`fuse: {fuse}`) or remove this step", path=here)
    return ConfigError(
        f"{here}: a fuser is not a step of its own; to fuse the branches of the parallel before it ({prev[1]}), "
        f"as Python's '(a + b) | {type(op).__name__}(...)' does, move it into that parallel as its 'fuse:': "
        f"`- parallel: {{branches: [...], fuse: {fuse}}}`", path=here)


def _written(name: str) -> str:
    """The registered operator ``name`` as one line of flow YAML that builds: ``name: {}`` when its defaults do,
    else with its registered example parameters (``score_router: {feature: top1, threshold: 20.0}``)."""
    cls = registry.get(name)
    if _builds(name, {}):
        return f"{name}: {{}}"
    return _flow({name: dict(cls.example)})[1:-1]


def _builds(name: str, params: Mapping[str, Any]) -> bool:
    """Whether the registered operator ``name``'s parameters validate with ``params`` (nothing is constructed)."""
    try:
        validate_params(registry.get(name).Params, dict(params), name)
    except (ParamError, ValueError, TypeError):
        return False
    return True


def _kind_example(kind: str | None) -> str:
    """One ``kind`` operator (``"judge"``, ``"router"``, ``"fuser"``) as flow YAML that builds, for a hint: the
    shortest of the registered examples of that kind that build (``max_only: {}``); a retriever's for any step."""
    written = []
    for name in _of_kind(kind) if kind is not None else ():
        example = registry.get(name).example
        if _builds(name, example):
            written.append(_flow({name: dict(example)})[1:-1])
    return min(written, key=lambda t: (len(t), t)) if written else "bm25: {k: 100}"


def _bare_name_hint(node: Any, path: str = "", expect: str | None = None) -> str:
    """For a bare operator name where a node is expected (``until: topk_stable``), or a list of one node where a
    ``expect`` operator goes (``fuse: [rrf: {}]``): how to write it."""
    key = path.rsplit(".", 1)[-1]
    if expect is not None and isinstance(node, list) and len(node) == 1:
        (item,) = node
        one = _flow(item)[1:-1] if isinstance(item, Mapping) and item else \
            _written(item) if isinstance(item, str) and item in registry.names() else None
        return f"; {key} takes one {expect}, not a list: write it without the '- ' or brackets, e.g. " \
               f"`{key}: {{{one}}}`" if one is not None else ""
    if not isinstance(node, str):
        return ""
    known = registry.names()
    if node in known:
        kind = registry.get(node).kind
        if expect is not None and kind != expect:
            return f"; {node} is a {kind}, and {key} takes a {expect}"
        written = _written(node)
        if written == f"{node}: {{}}":
            return f"; an operator with its default parameters is written '{written}'"
        return f"; an operator is written as a mapping of its name to its parameters, e.g. '{written}'"
    close = difflib.get_close_matches(node, _of_kind(expect) if expect is not None else known, n=1)
    return f" (did you mean '{_written(close[0])}'?)" if close else ""


def _placed(e: ParamError, owner: str, here: str) -> ConfigError:
    """``e`` (raised while building the node ``owner`` at ``here``) with every line that names a
    place inside the node (``route.default: ...``, ``sharded.retriever.bm25.k: ...``) naming it
    from the top of the file; a first line that names none is put at ``here``."""
    lines = str(e).split("\n")
    for i, line in enumerate(lines):
        if line.startswith(here):
            continue
        if line.startswith((f"{owner}.", f"{owner}:", f"{owner}[")):
            lines[i] = here + line[len(owner):]
        elif i == 0:
            lines[i] = f"{here}: {line}"
    path = e.path
    if not path.startswith(here):
        path = here + path[len(owner):] if path == owner or path.startswith((f"{owner}.", f"{owner}[")) else \
            lines[0].split(": ", 1)[0]
    return ConfigError("\n".join(lines), path=path)


def _is_operator(name: str) -> bool:
    """Whether ``name`` is a registered operator or a structural key (``parallel``, ``route``, ``loop``)."""
    return name in STRUCTURAL or name in registry.names()


def _keys_of(op: str) -> set[str]:
    """The keys an operator or structural node takes beneath it (its parameters, or ``branches``...)."""
    return set(STRUCTURAL[op]) if op in STRUCTURAL else set(registry.get(op).Params.model_fields)


def _of_kind(kind: str) -> list[str]:
    return sorted(n for n in registry.names() if registry.get(n).kind == kind)


def _owners_of(keys: list[str], kind: str) -> list[str]:
    """The ``kind`` operators that take every one of ``keys`` as a parameter."""
    return [n for n in _of_kind(kind) if set(keys) <= _keys_of(n)]


def _example(path: str, node: Any) -> str:
    """``node`` as flow YAML under the key ``path`` ends with (``fuse: {rrf: {k: 60}}``), or as a list item."""
    key = path.rsplit(".", 1)[-1]
    text = _flow(node)
    if len(text) > 100:  # a long value: its keys only
        text = _flow({k: (dict.fromkeys(v, "...") if isinstance(v, Mapping) else "...") for k, v in node.items()})
    return f"- {text[1:-1]}" if path.endswith("]") else f"{key}: {text}"


def _and(names: list[str]) -> str:
    """``a``, ``a and b``, ``a, b and c`` (``""`` for none)."""
    if not names:
        return ""
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


#: a node's path inside a parallel, route or loop: the composite, the key it is under, and (for a route's branch)
#: the label, then a list's positions (``pipeline[0].parallel.branches[1]``, ``pipeline[1].route.branches.a[0]``)
_INSIDE = re.compile(r"\.(parallel|route|loop)\.(\w+)(?:\.[^.\[\]]+)?(?:\[\d+\])*$")


def _enclosing(path: str) -> tuple[str, str] | None:
    """The composite whose key holds the node at ``path``, and that key (``("parallel", "branches")``)."""
    m = _INSIDE.search(path)
    if m is None or m.group(2) not in STRUCTURAL[m.group(1)]:
        return None
    return m.group(1), m.group(2)


def _as_list(node: Mapping[Any, Any]) -> str:
    """A mapping of several operators as the flow list of steps it was meant to be: ``[prf: {}, bm25: {}]``;
    within each step, the mappings written where lists belong are lists too (:func:`_relisted`)."""
    return "[" + ", ".join(_flow(_relisted({k: v}))[1:-1] for k, v in node.items()) + "]"


def _relisted(node: Any) -> Any:
    """``node`` (a step, or a list of steps) as it was likely meant, for a hint's example: a mapping of several
    operators where a parallel's branches, a loop's body or a route's branch belongs becomes a list of steps,
    and a parallel's branches given as a mapping of names to branches a list with 'names:'; all else as it is."""
    if isinstance(node, list):
        return [_relisted(x) for x in node]
    if not isinstance(node, Mapping):
        return node
    out = {}
    for key, value in node.items():
        if key in STRUCTURAL and isinstance(value, Mapping):
            value = {k: _relisted(v) for k, v in value.items()}
            branches = node[key].get("branches")
            if key == "parallel" and isinstance(branches, Mapping) and branches:
                if _all_operators(branches):
                    value["branches"] = [_relisted({k: v}) for k, v in branches.items()]
                elif "names" not in value and all(isinstance(b, (list, Mapping)) for b in branches.values()):
                    value["branches"] = [_relisted(b) for b in branches.values()]  # named branches
                    value["names"] = [str(k) for k in branches]
            elif key == "route" and isinstance(branches, Mapping):
                value["branches"] = {k: _steps_of(b) for k, b in branches.items()}
            if key == "loop" and "body" in value:
                value["body"] = _steps_of(node[key]["body"])
        out[key] = value
    return out


def _all_operators(node: Mapping[Any, Any]) -> bool:
    return all(_is_operator(str(k)) for k in node)


def _steps_of(node: Any) -> Any:
    """A list of steps, a step or a mapping of several operators (written where a list of steps belongs) as the
    list of steps it was likely meant to be (a single step, as it is), each relisted (:func:`_relisted`)."""
    if isinstance(node, Mapping) and len(node) > 1 and _all_operators(node):
        return [_relisted({k: v}) for k, v in node.items()]
    return _relisted(node)


def _nesting_hint(node: Mapping[Any, Any], path: str, expect: str | None) -> str:
    """For a mapping of several keys where one operator is expected: how it was likely meant to nest."""
    names = [str(k) for k in node]
    ops = [n for n in names if _is_operator(n)]
    if len(ops) == 1:
        (op,), rest = ops, [n for n in names if n != ops[0]]
        inner = node[op]
        if set(rest) <= _keys_of(op) and (inner is None or isinstance(inner, Mapping)):
            noun = "parameter" if op not in STRUCTURAL else "key"
            which = (f"{rest[0]} is a {noun} of {op}: indent it" if len(rest) == 1 else
                     f"{_and(rest)} are {noun}s of {op}: indent them")
            nested = {op: {**(inner or {}), **{r: node[r] for r in rest}}}
            return f"; {which} under '{op}:', e.g. `{_example(path, nested)}`"
        return ""
    if ops and len(ops) == len(names):  # several operators: several steps
        if expect is not None:
            return f"; {path.rsplit('.', 1)[-1]} takes one {expect} operator"
        if path.endswith("]"):
            return (f"; a list item holds one step: start each of {', '.join(ops)} with its own '- ', as in "
                    f"`{_as_list(node)}`")
        return f"; a mapping of {len(ops)} operators where a step or a list of steps is expected" + \
            _list_hint(node, path)
    if expect is not None and names and not ops and (owners := _owners_of(names, expect)):
        return (f"; {_and(names)} are parameters of {' and '.join(owners)}: {path.rsplit('.', 1)[-1]} takes one "
                f"{expect} operator with its parameters beneath it, e.g. `{_example(path, {owners[0]: dict(node)})}`")
    return ""


def _too_deep_keys(node: Mapping[Any, Any], path: str) -> ConfigError | None:
    """The error for a step or branch at ``path`` that holds, beside its one operator, keys of the composite it
    is in, indented one level too deep under it (``fuse:`` under a parallel's last branch): at the path of the
    first such key, so that a file's error cites the line it is written on, not its operator's."""
    names = [str(k) for k in node]
    ops = [n for n in names if _is_operator(n)]
    outer = _enclosing(path)
    if len(ops) != 1 or outer is None:
        return None
    op, rest = ops[0], [n for n in names if n != ops[0]]
    inner = node[op]
    if (set(rest) <= _keys_of(op) and (inner is None or isinstance(inner, Mapping))) or not (
            set(rest) <= set(STRUCTURAL[outer[0]]) - {outer[1]}):
        return None
    which = f"{rest[0]} is a key" if len(rest) == 1 else f"{_and(rest)} are keys"
    at = f"{path}.{rest[0]}"
    return ConfigError(f"{at}: {which} of {outer[0]}, not of {op}: dedent {'it' if len(rest) == 1 else 'them'} to the "
                       f"level of '{outer[1]}:' (written under {op}, {'it makes' if len(rest) == 1 else 'they make'} "
                       f"{path.rsplit('.', 1)[-1]} a mapping of {len(names)} keys, {names}, where one operator is "
                       "expected)", path=at)


def _flow_step(node: Any) -> str:
    """A step (``{bm25: {}}``) or a list of steps as flow YAML list items are written: ``bm25: {}``,
    ``[prf: {}, bm25: {}]``."""
    if isinstance(node, list):
        return "[" + ", ".join(_flow_step(x) for x in node) + "]"
    return _flow(node)[1:-1] if isinstance(node, Mapping) and len(node) == 1 else _flow(node)


def _indented_too_far(body: Mapping[Any, Any], keys: Any) -> set[str]:
    """The ``keys`` of a composite that ``body`` lacks and that a step in one of its lists (or a route's branch
    lists) has beside its operator: written one level too deep (their 'missing' is explained there)."""
    lists = [v for v in body.values() if isinstance(v, list)] + [
        b for v in body.values() if isinstance(v, Mapping) for b in v.values() if isinstance(b, list)]
    beside: set[str] = set()
    for x in (x for items in lists for x in items if isinstance(x, Mapping) and len(x) > 1):
        ops = [str(k) for k in x if _is_operator(str(k))]
        if len(ops) == 1:  # (a key of that operator's own is not one written too deep: see _nesting_hint)
            beside |= {str(k) for k in x} - _keys_of(ops[0]) - {ops[0]}
    return (beside & set(keys)) - {str(k) for k in body}


def _list_hint(node: Any, path: str, item: str = "step") -> str:
    """For a mapping where a list of steps (``item="branch"``: of a parallel's branches) is expected: the list it
    was likely meant to be (``: write the steps as a list, e.g. `pipeline: [bm25: {}, top_k: {k: 5}]```)."""
    if not isinstance(node, Mapping) or not node:
        return ""
    key = path.rsplit(".", 1)[-1]
    if all(_is_operator(str(k)) for k in node):
        return f": write the {item}{'es' if item == 'branch' else 's'} as a list, e.g. `{key}: {_as_list(node)}`"
    if item == "branch" and all(isinstance(v, list) or isinstance(v, Mapping) and len(v) == 1 for v in node.values()):
        listed = "[" + ", ".join(_flow_step(_relisted(v)) for v in node.values()) + "]"
        return (f": a parallel's branches are a list, and 'names:' names them, e.g. `{key}: {listed}, names: "
                f"{_flow([str(k) for k in node])}`")
    return ""


#: per structural node: the kind of operator one of its keys takes, that key, and where other operators go
_HOMES = {"parallel": ("fuser", "fuse", "a branch in 'branches:'"),
          "route": ("router", "router", "a branch under 'branches:'"),
          "loop": ("judge", "until", "'body:'")}


def _misplaced_operator(node: str, op: str, params: Any, given: bool, problems: _Problems) -> str:
    """The problem of an operator ``op`` written as a key of the structural ``node`` (``parallel: {rrf: ...}``,
    ``route: {rule_router: ...}``): where it belongs (``given``: whether the node has a value under the key it
    belongs under).  Its home key, when missing, is not reported again."""
    kind, key, steps = _HOMES[node]
    written = _flow({op: params if params is not None else {}})
    if _is_operator(op) and op not in STRUCTURAL and registry.get(op).kind == kind:
        problems.explained.add(key)
        if given:
            return f"{op} is a {kind}, not a key of {node}, and the {kind} is given under '{key}:' already: remove it"
        return f"{op} is a {kind}, not a key of {node}: nest it under '{key}:', as in `{key}: {written}`"
    return f"{op} is an operator, not a key of {node} (which takes {sorted(STRUCTURAL[node])}): put it in {steps}"


_T = TypeVar("_T")


def _needs_operator(node: str, key: str, kind: str, does: str) -> Callable[[], str]:
    """What the ``key`` of a ``node`` that takes a ``kind`` operator needs, for its 'missing' problem."""
    return lambda: (f"a {node} needs '{key}:', the {kind} that {does} ({', '.join(_of_kind(kind))}), e.g. "
                    f"`{key}: {{{_kind_example(kind)}}}`")


#: ``(composite, key)``: what a missing required key takes, with an example (the operators of its kind as registered)
_NEEDS: dict[tuple[str, str], Callable[[], str]] = {
    ("loop", "until"): _needs_operator("loop", "until", "judge", "decides when each query's loop stops"),
    ("route", "router"): _needs_operator("route", "router", "router", "labels each query"),
    ("loop", "body"): lambda: "a loop needs 'body:', the steps it repeats, e.g. `body: [prf: {}, bm25: {}]`",
    ("parallel", "branches"): lambda: ("a parallel needs 'branches:', the list of branches whose rankings it fuses, "
                                       "e.g. `branches: [bm25: {}, dense: {}]`"),
    ("route", "branches"): lambda: ("a route needs 'branches:', a mapping of each label to its steps ([] passes its "
                                    "queries through), e.g. `branches: {short: [bm25: {}], long: []}`"),
}


class _Problems:
    """The problems of one parallel / route / loop node, collected from all of its keys and reported
    together in one error, in the order the keys are written (a missing key's first)."""

    def __init__(self, body: Mapping[Any, Any]) -> None:
        self._rank = {str(k): i for i, k in enumerate(body)}
        self._found: list[tuple[str, ConfigError]] = []
        #: keys whose absence another problem explains (``rule_router:`` written beside ``router:``'s place)
        self.explained: set[str] = set()

    def add(self, key: str, error: ConfigError) -> None:
        self._found.append((key, error))

    def wrong(self, key: str, here: str, what: str) -> None:
        """A problem of ``key`` of the node at ``here``: ``"<here>.<key>: <what>"``."""
        self.add(key, ConfigError(f"{here}.{key}: {what}", path=f"{here}.{key}"))

    def attempt(self, key: str, make: Callable[[], _T]) -> _T | None:
        """``make()``, or ``None`` when it raises a :class:`ConfigError` (kept as a problem of ``key``)."""
        try:
            return make()
        except ConfigError as e:
            self.add(key, e)
            return None

    def given(self, body: Mapping[Any, Any], key: str, here: str) -> bool:
        """Whether ``body`` has ``key`` (not null); a problem of ``key`` when it has not (``missing``, with what
        the key takes and an example, from :data:`_NEEDS`)."""
        if body.get(key) is None:
            if key not in self.explained:
                node = here.rsplit(".", 1)[-1]
                need = _NEEDS.get((node, key))
                self.wrong(key, here, "missing" if need is None else f"missing; {need()}")
            return False
        return True

    def check(self) -> None:
        """Raise every problem found so far, as one error."""
        if self._found:
            order = sorted(range(len(self._found)), key=lambda i: (self._rank.get(self._found[i][0], -1), i))
            raise _combined([self._found[i][1] for i in order])


#: a key and its value written with no space after the colon (``{k:10}``), which YAML reads as one key 'k:10'
_NO_SPACE = re.compile(r"\s*([A-Za-z_]\w*):(\S.*)")


def _no_space_after_colon(key: Any, value: Any) -> str | None:
    """For a key YAML read as ``name:value`` with no value (``{k:10}``): that YAML needs a space after the colon."""
    m = _NO_SPACE.fullmatch(key) if isinstance(key, str) and value is None else None
    if m is None:
        return None
    return f"read as one key {key!r} with no value: YAML needs a space after the colon: `{m[1]}: {m[2]}`"


def _params_hint(name: str, body: Any) -> str:
    """For an operator's parameters written as something else than a mapping: the mapping they were likely
    meant to be (``top_k:`` then ``- k: 10``, a list, is ``top_k: {k: 10}``; ``bm25: k:10``, text, is
    ``bm25: {k: 10}``)."""
    if isinstance(body, list) and body and all(isinstance(x, Mapping) for x in body):
        merged = {k: v for x in body for k, v in x.items()}
        return (f"; parameters are a mapping, not a list: drop the '- ' before each, e.g. "
                f"`{name}: {_flow(merged)}`")
    if isinstance(body, str) and (m := _NO_SPACE.fullmatch(body)):
        return f"; YAML needs a space after the colon, and the parameters go in a mapping: `{name}: {{{m[1]}: {m[2]}}}`"
    example = registry.get(name).example
    shown = _flow({name: dict(example)})[1:-1] if example and _builds(name, example) else f"{name}: {{}}"
    return f"; write the parameters as a mapping of name: value, e.g. `{shown}`"


def build(node: Any, path: str, make_leaf: LeafFactory = _default_leaf, *, expect: str | None = None) -> Operator:
    """Build one node (``{name: params}``) found at ``path``.

    The problems of a parallel / route / loop node (its keys, every branch, its fuser, router,
    default, body, judge) are all reported in one :class:`ConfigError`, one line each.  ``expect``:
    the kind of operator the place takes (``"fuser"``, ``"router"``, ``"judge"``), for the hint
    when its parameters are written there without it (``fuse: {k: 60}``).
    """
    def wanted() -> str:  # (for the errors only: its example validates the registered examples)
        return (f"a mapping with one {expect} operator name as key ({', '.join(_of_kind(expect))}; e.g. "
                f"'{_kind_example(expect)}')" if expect is not None else
                f"a mapping with one operator name as key (e.g. '{_kind_example(None)}')")

    if node is None:  # '-' or 'key:' with nothing after it
        raise ConfigError(f"{path}: empty (nothing is written after its '-' or key); expected {wanted()}", path=path)
    if not isinstance(node, Mapping):
        raise ConfigError(f"{path}: expected {wanted()}, got {type(node).__name__} {node!r:.60}"
                          f"{_bare_name_hint(node, path, expect)}", path=path)
    if not node:  # '{}': a mapping with no operator in it
        what = f"one {expect} ({', '.join(_of_kind(expect))})" if expect is not None else "one operator"
        raise ConfigError(f"{path}: expected exactly one {expect or 'operator'} key, got none (an empty mapping, "
                          f"{{}}); write {what} with its parameters beneath it, e.g. "
                          f"`{_example(path, yaml.safe_load('{' + _kind_example(expect) + '}'))}`", path=path)
    if len(node) != 1:
        too_deep = _too_deep_keys(node, path)
        if too_deep is not None:
            raise too_deep
        raise ConfigError(f"{path}: expected exactly one operator key, got {len(node)}: {list(map(str, node))}"
                          f"{_nesting_hint(node, path, expect)}", path=path)
    (name, body), = node.items()
    if not isinstance(name, str):
        raise ConfigError(f"{path}: operator name must be a string, got {name!r}", path=path)
    here = f"{path}.{name}"
    if expect is not None and not _is_operator(name) and (owners := _owners_of([name], expect)):
        raise ConfigError(f"{path}: expected one {expect} operator ({', '.join(_of_kind(expect))}) with its parameters "
                          f"beneath it, got {name!r}, a parameter of {' and '.join(owners)}: nest it under the "
                          f"operator, e.g. `{_example(path, {owners[0]: dict(node)})}`", path=path)
    if name in STRUCTURAL:
        body = {} if body is None else body
        if not isinstance(body, Mapping):
            raise ConfigError(f"{here}: expected a mapping of {sorted(STRUCTURAL[name])}, got {body!r:.60}", path=here)
        problems = _Problems(body)
        problems.explained |= _indented_too_far(body, STRUCTURAL[name])
        for bad in (str(k) for k in body if str(k) not in STRUCTURAL[name]):
            if _is_operator(bad):  # an operator beside the keys: it belongs under one of them
                home = _HOMES[name][1]
                problems.wrong(bad, here, _misplaced_operator(name, bad, body[bad], body.get(home) is not None,
                                                              problems))
                continue
            said = _no_space_after_colon(bad, body[bad])
            if said:
                problems.wrong(bad, here, said)
                continue
            close = difflib.get_close_matches(bad, sorted(STRUCTURAL[name]), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.explained.update(close)  # its 'missing' is this problem (as a misspelt top-level 'pipeline')
            problems.wrong(bad, here, f"unknown key{hint}; {name} takes {sorted(STRUCTURAL[name])}")
        try:
            return _STRUCT_BUILDERS[name](body, here, make_leaf, problems)
        except ConfigError:
            raise
        except ParamError as e:
            raise _placed(e, name, here) from None
    try:
        cls = registry.get(name, path=here, structural=True)
    except ParamError as e:
        raise ConfigError(str(e), path=here) from None
    if body is None:
        body = {}
    if not isinstance(body, Mapping):
        raise ConfigError(f"{here}: expected a mapping of parameters, got {type(body).__name__} {body!r:.60}"
                          f"{_params_hint(name, body)}", path=here)
    colons = [(str(k), said) for k, v in body.items() if (said := _no_space_after_colon(k, v))]
    if colons:
        raise _combined([ConfigError(f"{here}.{k}: {said}", path=f"{here}.{k}") for k, said in colons])
    try:
        return make_leaf(here, cls, body)
    except ConfigError:
        raise
    except ParamError as e:
        raise _placed(e, name, here) from None


def _build_parallel(body: Mapping[str, Any], here: str, make_leaf: LeafFactory, problems: _Problems) -> Parallel:
    branches, built = body.get("branches"), None
    if problems.given(body, "branches", here):
        if not isinstance(branches, list) or not branches:
            hint = _list_hint(branches, f"{here}.branches", "branch")
            problems.wrong("branches", here, f"expected a non-empty list of branches, got {branches!r:.60}"
                                             f"{';' + hint[1:] if hint else ''}")
        else:
            for i in (i for i, b in enumerate(branches) if b == []):
                where = f"{here}.branches[{i}]"
                problems.add("branches", ConfigError(
                    f"{where}: expected a non-empty list of operators, got []; a parallel's branch is not a "
                    f"pass-through as a route's [] is (each branch makes a ranking to fuse): to fuse the ranking that "
                    f"reaches the parallel with the other branches', write a branch that keeps it, e.g. "
                    f"`- top_k: {{k: 100}}` (its k at least that ranking's depth)", path=where))
            built = problems.attempt("branches", lambda: _build_all(
                [(b, f"{here}.branches[{i}]") for i, b in enumerate(branches) if b != []], make_leaf))
    fuse = None
    if "fuse" in body:
        if body["fuse"] is None:
            problems.wrong("fuse", here, f"expected a fuser node such as '{_kind_example('fuser')}' "
                                         f"({', '.join(_of_kind('fuser'))}), got nothing")
        else:
            fuse = problems.attempt("fuse", lambda: _need_kind(
                build(body["fuse"], f"{here}.fuse", make_leaf, expect="fuser"), "fuser", f"{here}.fuse"))
    names, names_ok = body.get("names"), True
    if names is not None:  # (Parallel's own check, placed at its path in the file)
        problem = branch_names_problem(names, len(branches) if isinstance(branches, list) and branches else None)[1]
        if problem:
            problems.wrong("names", here, problem)
            names_ok = False
    labels = names if names is not None else unique_names(built) if built is not None else None
    problem = fuse_weights_problem(fuse, labels) if fuse is not None and names_ok and labels is not None else None
    if problem and fuse is not None:
        where = f"{here}.fuse.{fuse.name}.weights"
        problems.add("fuse", ConfigError(f"{where}: {problem}", path=where))
    problems.check()
    assert built is not None  # (else a problem was found: check raised it)
    return Parallel(built, fuse=fuse, names=names)


def _quote_forms(value: Any) -> str:
    """How a label YAML read as ``value`` (a boolean or a number) was likely written, quoted."""
    if value is True:
        return '"yes" (or "on", "true": whichever you wrote)'
    if value is False:
        return '"no" (or "off", "false": whichever you wrote)'
    return f'"{value}"'


def _labelled_hint(branches: Any, router: Operator | None = None) -> str:
    """For a route's branches written as something else than a mapping: the mapping of labels they were likely
    meant to be (a list of ``- label: [...]`` items is that mapping without the '- '); its labels are those the
    ``router`` can give (``possible_labels``), ``short`` / ``long`` without one (or one that does not tell)."""
    possible = getattr(router, "possible_labels", None)
    gives = [str(label) for label in possible()] if callable(possible) else []
    if isinstance(branches, list) and branches and all(isinstance(x, Mapping) and x for x in branches) and all(
            _all_operators(x) for x in branches):  # steps, not labels: `branches: {bm25: {}}` names no label
        names = gives or ["short", "long"]
        names = [*names, *(f"label{i}" for i in range(len(names) + 1, len(branches) + 1))]
        labelled = ", ".join(f"{_flow([name])[1:-1]}: {_flow_step([step])}" for name, step in zip(names, branches))
        rest = gives[len(branches):]
        also = (f"; router {router.name!r} also labels queries {rest}: a branch for each, or a 'default:' to the "
                f"route" if rest and router is not None else "")
        return (f"; these are steps, and a route's branches are a mapping of label: steps, a label the router gives "
                f"(its queries run the steps) before each: e.g. `branches: {{{labelled}}}`{also}")
    if isinstance(branches, list) and branches and all(isinstance(x, Mapping) for x in branches):
        merged = {k: _steps_of(v) for x in branches for k, v in x.items()}
        return (f"; a route's branches are a mapping of label: steps, not a list: drop the '- ' before each label, "
                f"e.g. `branches: {_flow(merged)}`")
    steps = ["[bm25: {}]", "[dense: {}]"]
    labelled = ", ".join(f"{_flow([name])[1:-1]}: {steps[i % 2]}" for i, name in enumerate(gives or ["short", "long"]))
    return f"; e.g. `branches: {{{labelled}}}` (a label the router gives: its steps)"


def _build_route(body: Mapping[str, Any], here: str, make_leaf: LeafFactory, problems: _Problems) -> Route:
    router = None
    if problems.given(body, "router", here):
        router = problems.attempt("router", lambda: _need_kind(
            build(body["router"], f"{here}.router", make_leaf, expect="router"), "router", f"{here}.router"))
    branches, built, labels_ok = body.get("branches"), None, False
    if problems.given(body, "branches", here):
        if not isinstance(branches, Mapping) or not branches:
            problems.wrong("branches", here, f"expected a mapping of label -> pipeline, got {branches!r:.60}"
                                             f"{_labelled_hint(branches, router)}")
        else:
            # the labels' types, and the branches no label reaches (has_default=True: a label without a branch is
            # told below, once the default is read; a branch that only the default label reaches does run)
            given_label = body.get("default")
            problem = route_label_problem_at(router, branches, has_default=True,
                                             default_label=given_label if isinstance(given_label, str) else None)
            if problem:
                _label_problem(problems, here, problem)
            labels_ok = not problem
            # an empty list is a pass-through branch: its queries keep the rankings they arrived with
            filled = [k for k, v in branches.items() if v != [] and v is not None]
            for k in (k for k, v in branches.items() if v is None):  # 'a:' with nothing after it
                problems.add("branches", ConfigError(
                    f"{here}.branches.{k}: empty; expected a step or a list of steps, or `{k}: []` for a branch "
                    "that passes its queries through unchanged", path=f"{here}.branches.{k}"))
            made = problems.attempt("branches", lambda: _build_all(
                [(branches[k], f"{here}.branches.{k}") for k in filled], make_leaf))
            if made is not None and labels_ok:
                built_filled = dict(zip(filled, made))
                built = {k: built_filled[k] if k in built_filled else Pipeline([]) for k in branches}
    given_default = body.get("default")
    default: Operator | str | None = None  # the label or branch, once given_default passed its checks
    if isinstance(given_default, (bool, int, float)):
        problems.wrong("default", here, f"expected a branch label (a string) or a pipeline, got {given_default!r}; "
                       f"YAML reads unquoted yes/no/on/off/true/false as booleans and digits as numbers: quote the "
                       f"label, e.g. default: {_quote_forms(given_default)}")
    elif isinstance(given_default, str):
        default = given_default
        if isinstance(branches, Mapping) and branches and default not in branches:
            known = sorted(branches, key=str)  # a label YAML read as a boolean or a number is shown as such
            close = difflib.get_close_matches(default, [k for k in known if isinstance(k, str)], n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.wrong("default", here, f"label {default!r} is not a branch{hint}; branches: {known}")
    elif given_default == []:
        default = Pipeline([])
    elif given_default is not None:
        default = problems.attempt("default", lambda: _branch(body["default"], f"{here}.default", make_leaf))
    if router is not None and built is not None:
        problem = route_label_problem_at(router, built, has_default=given_default is not None,
                                         default_label=default if isinstance(default, str) else None)
        if problem:
            _label_problem(problems, here, problem)
    problems.check()
    assert router is not None and built is not None  # (else a problem was found: check raised it)
    return Route(router, built, default=default)


def _label_problem(problems: _Problems, here: str, problem: tuple[str, str]) -> None:
    """A route's label problem ``(where, why)`` (:func:`route_label_problem_at`), kept as a problem of its
    ``branches`` (the order of the route's problems) at ``where``: a misspelt label is cited at the router's
    parameter that gives it, so that the error names that line of the file."""
    where, why = problem
    problems.add("branches", ConfigError(f"{here}.{where}: {why}", path=f"{here}.{where}"))


def _build_loop(body: Mapping[str, Any], here: str, make_leaf: LeafFactory, problems: _Problems) -> Loop:
    loop_body = until = None
    if problems.given(body, "body", here):
        loop_body = problems.attempt("body", lambda: _branch(body["body"], f"{here}.body", make_leaf))
    if problems.given(body, "until", here):
        until = problems.attempt("until", lambda: _need_kind(
            build(body["until"], f"{here}.until", make_leaf, expect="judge"), "judge", f"{here}.until"))
    given = body.get("max_iters", DEFAULT_MAX_ITERS)
    problem = max_iters_problem(given)[1]  # (Loop's own check, placed at its path in the file)
    if problem:
        why = "; YAML reads unquoted yes/no/on/off/true/false as booleans" if isinstance(given, bool) else ""
        problems.wrong("max_iters", here, f"{problem}{why}")
    problems.check()
    assert loop_body is not None and until is not None  # (else check raised the problem)
    return Loop(loop_body, until=until, max_iters=given)


def _need_kind(op: Operator, kind: str, where: str) -> Operator:
    """``op``, when it is a ``kind`` operator (a fuser, a router, a judge)."""
    if op.kind != kind:
        raise ConfigError(f"{where}: expected a {kind} operator ({', '.join(_of_kind(kind))}), got {op.name!r} "
                          f"(a {op.kind})", path=where)
    return op


_STRUCT_BUILDERS = {"parallel": _build_parallel, "route": _build_route, "loop": _build_loop}


# ---------------------------------------------------------------------- dumping
def to_node(op: Operator, full: bool = False) -> Any:
    """The YAML node of an operator tree (a list for a linear pipeline): each operator's parameters that differ
    from their defaults, or with ``full`` every parameter, defaults included (JSON values), and a parallel's
    fuser and branch names even where the YAML leaves them implicit (what ``ragkit eval -o`` records as
    ``pipeline_resolved``).  A tree holding a composite inside itself, or a step that is no operator, is a
    :class:`ParamError` at its path (:func:`~ragkit.pipelines._compose.checked_nodes`), not a RecursionError."""
    checked_nodes(op, "pipeline" if isinstance(op, Pipeline) else "")
    return _node(op, full)


def _node(op: Operator, full: bool) -> Any:
    """:func:`to_node` of a checked tree."""
    if isinstance(op, Pipeline):
        return [_node(s, full) for s in op.steps]
    if isinstance(op, Parallel):
        node: dict[str, Any] = {"branches": [_node(b, full) for b in op.branches]}
        if full or not op.implicit_fuse:
            node["fuse"] = _node(op.fuse, full)
        if full or op.names != unique_names(op.branches):
            node["names"] = list(op.names)
        return {"parallel": node}
    if isinstance(op, Route):
        node = {"router": _node(op.router, full),
                "branches": {k: _node(v, full) for k, v in op.branches.items()}}
        if op.default_label is not None:
            node["default"] = op.default_label
        elif op.default is not None:
            node["default"] = _node(op.default, full)
        return {"route": node}
    if isinstance(op, Loop):
        return {"loop": {"body": _node(op.body, full), "until": _node(op.until, full), "max_iters": op.max_iters}}
    registry.check_registered(op, f"to_yaml: {op.name!r}")
    return {op.name: op.params.model_dump(mode="json") if full else op.params.non_default()}


def dump_yaml(pipe: Pipeline) -> str:
    """YAML text of a pipeline; ``load_yaml(dump_yaml(p))`` rebuilds an equal pipeline.  An empty ``Pipeline([])``
    is a :class:`ParamError`, as its save is: ``pipeline: []`` is a file no load accepts."""
    if not pipe.steps:
        raise ParamError("pipeline: expected a pipeline of at least one operator to write as YAML, got an empty "
                         "Pipeline([]) (a pipeline file cannot hold pipeline: [])", path="pipeline")
    doc = {"description": pipe.description} if pipe.description is not None else {}
    doc["pipeline"] = to_node(pipe)
    return yaml.dump(doc, Dumper=_Dumper, sort_keys=False, default_flow_style=None, allow_unicode=True)


def walk_leaves(op: Operator, path: str = "pipeline") -> Iterator[tuple[str, Operator]]:
    """``(path, leaf)`` for every leaf, with the same paths the YAML builder, the traces and the errors of
    search and fit use (``"pipeline[0].bm25"``, ``"pipeline[1].parallel.branches[0].dense"``).  ``path=""``:
    ``op`` searched or fitted on its own, its paths built as those of a composite on its own are
    (``"parallel.branches[0].dense"``; a leaf on its own is at its name, ``"dense"``, or at its class's name
    when it has none)."""
    if isinstance(op, Composite):
        for child, where in op.child_paths(path):
            yield from walk_leaves(child, where)
    else:
        yield f"{path}.{op.name}" if path else op.name or type(op).__name__, op


def validate_file(path: str | os.PathLike[str]) -> Pipeline:
    """Check a pipeline YAML file without fitting or running it (``ragkit validate``).

    Parses with a safe loader, validates the whole tree (structure, operator names,
    every operator's parameters) and returns the built, unfitted pipeline.  Raises
    :class:`~ragkit.errors.ConfigError` whose message starts with the path inside the
    file (or ``<file>: line N`` for text that is not YAML).
    """
    check_yaml_source(path, "validate_file: path", mapping=False)
    p = Path(path)
    kind = _what_is(p)
    if kind == "folder":
        raise _not_a_file(p, kind)
    if kind is None:
        raise ConfigError(f"{p}: pipeline file not found", path=str(p))
    return load_yaml(p)
