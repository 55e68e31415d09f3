"""The plain-text parameter reference (:mod:`ragkit._reference`): every registered operator's parameters, read from
its ``Params`` model, and the structural keys' keys and defaults, read from where they are defined.

Before it, a YAML author who knew only README.md could not find rule_router's rule keys, score_router's labels or
a loop's default ``max_iters``: only Python's ``help()`` showed them.
"""

from __future__ import annotations

import inspect
import re
from typing import Literal

import pytest
from pydantic import Field

from ragkit import Operator, Params, registry
from ragkit._reference import WIDTH, describe, operator_table, table_text, undocumented_fields
from ragkit.errors import InputTypeError, ParamError, RagkitError
from ragkit.params import params_section
from ragkit.pipelines._compose import Loop
from ragkit.pipelines.yaml import STRUCTURAL, load_yaml
from ragkit.registry import register


def _keys_at(text: str, indent: int) -> list[str]:
    """The ``key:`` names that start a line indented by exactly ``indent`` spaces."""
    return re.findall(rf"^ {{{indent}}}(\w+): ", text, flags=re.MULTILINE)


def test_every_operator_describes_every_field_of_its_params_model():
    for name in registry.names():
        text = describe(name)
        model = registry.get(name).Params
        assert text.startswith(f"{name} ({registry.get(name).kind})\n"), name
        assert _keys_at(text, 2) == list(model.model_fields), name  # every field, in the model's order
        for field in model.model_fields.values():
            if field.description:
                said = " ".join(field.description.replace("`", "").split())[:40]  # (its markup is dropped)
                assert said in " ".join(text.split()), name


def test_rule_router_names_its_rule_keys_its_case_option_and_its_default_label():
    text = describe("rule_router")
    assert _keys_at(text, 2) == ["rules", "default", "ignore_case"]
    assert _keys_at(text, 8) == ["label", "regex", "keywords", "min_words", "max_words"]  # a rule's keys, nested
    assert re.search(r"^  rules: list of mappings \(keys below\); required; at least 1 item$", text, re.MULTILINE)
    assert re.search(r"^  default: string; default \"default\"", text, re.MULTILINE)  # the implicit label
    assert re.search(r"^        min_words: int or null; default null; >= 0$", text, re.MULTILINE)
    assert "One routing rule: every condition given must hold (AND)" in " ".join(text.split())


def test_a_nested_settings_model_is_expanded_one_level():
    text = describe("dense")
    from ragkit.encoders.adapt import AdaptConfig

    assert re.search(r"^  adapt: mapping \(keys below\) or null; default null$", text, re.MULTILINE)
    assert _keys_at(text, 8) == list(AdaptConfig.model_fields)
    assert re.search(r"^        seed: int; default 0; >= 0, <= 4294967295$", text, re.MULTILINE)


def test_routers_judges_and_thresholds_show_their_parameters():
    assert re.search(r"^  feature: top1 \| gap \| rel_gap; default \"top1\"$", describe("score_router"), re.M)
    assert {"above", "below"} <= set(_keys_at(describe("score_router"), 2))
    assert re.search(r"^  order: set \| ranked; default \"set\"$", describe("topk_stable"), re.M)
    assert re.search(r"^  rank: int; default 1; >= 1$", describe("score_reached"), re.M)
    assert re.search(r"^  threshold: float; default 0.5$", describe("score_threshold"), re.M)
    assert re.search(r"^  alpha: float; default 0.9; > 0, <= 1$", describe("relative_threshold"), re.M)


def test_a_choice_lists_its_values_and_the_spellings_it_reads():
    text = describe("dense")
    assert re.search(r"^  dtype: f32 \| f16 \| i8 \| b1; default \"f32\"$", text, re.MULTILINE)
    assert "also read: float32, fp32 as f32; float16, fp16, half as f16; int8 as i8; binary, bit as b1" in text
    assert re.search(r"^  reduce: string; default \"none\"; matching the regex \^\(none", text, re.MULTILINE)


def test_loop_shows_max_iters_default_3_as_yaml_builds_it():
    text = describe("loop")
    assert _keys_at(text, 2) == ["body", "until", "max_iters"]
    assert re.search(r"^  max_iters: int; default 3; >= 1, <= 1000$", text, re.MULTILINE)
    built = load_yaml({"pipeline": [{"loop": {"body": [{"bm25": {}}], "until": {"max_only": {}}}}]}).steps[0]
    assert built.max_iters == inspect.signature(Loop.__init__).parameters["max_iters"].default == 3


def test_parallel_shows_its_keys_and_rrf_as_the_fuser_when_none_is_given():
    text = describe("parallel")
    assert sorted(_keys_at(text, 2)) == sorted(STRUCTURAL["parallel"])
    assert re.search(r"^  fuse: .*; default \{rrf: \{\}\}: rrf with its own defaults", text, re.MULTILINE)
    assert re.search(r"^  names: list of str; optional$", text, re.MULTILINE)
    built = load_yaml({"pipeline": [{"parallel": {"branches": [{"bm25": {}}, {"bm25": {"k": 5}}]}}]}).steps[0]
    assert built.fuse.name == "rrf" and built.implicit_fuse


def test_route_shows_its_keys():
    text = describe("route")
    assert sorted(_keys_at(text, 2)) == sorted(STRUCTURAL["route"])
    assert re.search(r"^  router: .*; required$", text, re.MULTILINE)
    assert re.search(r"^  default: .*; optional$", text, re.MULTILINE)


def test_an_unknown_name_suggests_the_closest():
    with pytest.raises(RagkitError, match=r"unknown operator 'bm52'; did you mean 'bm25'"):
        describe("bm52")
    with pytest.raises(ParamError, match=r"did you mean 'parallel' \(structural key\)"):
        describe("paralel")
    with pytest.raises(InputTypeError, match=r"describe: expected an operator name .*got int 3"):
        describe(3)  # type: ignore[arg-type]


def test_the_text_is_plain_deterministic_and_fits_the_width():
    for name in registry.names() + registry.structural_keys():
        text = describe(name)
        assert text == describe(name)
        assert max(map(len, text.splitlines())) <= WIDTH, name
        assert not re.search(r"``|:class:|:func:|\[/?(bold|cyan|red|dim)\]| at 0x", text), name
    assert max(map(len, table_text().splitlines())) <= WIDTH


def test_operator_table_covers_every_operator_sorted_by_kind_then_name():
    rows = operator_table()
    assert sorted(r[0] for r in rows) == registry.names()
    assert rows == sorted(rows, key=lambda r: (r[1], r[0]))
    assert all(summary and "\n" not in summary for _, _, summary in rows)
    assert ("rule_router", "router", "Label queries by ordered rules on their text (regex, word count, keywords).") \
        in rows


def test_every_builtin_parameter_has_a_description():
    builtin = [f for f in undocumented_fields() if registry.get(f.split(".")[0]).__module__.startswith("ragkit.")]
    assert builtin == []


def test_a_plugin_operator_is_listed_and_described(scratch):
    class ProbeRule(Params):
        """A probe's rule."""

        word: str = Field(min_length=1, description="The word.")
        weight: float = 1.0

    class ProbeRefParams(Params):
        mode: Literal["a", "b"] = "a"
        rules: list[ProbeRule] = Field(default_factory=list, description="Probe rules.")

    @register
    class ProbeRef(Operator):
        """Probe operator of the reference test.

        Second paragraph, citing Someone et al., SIGIR 2020.
        """

        name = "probe_ref"
        kind = "filter"
        Params = ProbeRefParams

    assert ("probe_ref", "filter", "Probe operator of the reference test.") in operator_table()
    text = describe("probe_ref")
    assert "Paper:\n  - Second paragraph, citing Someone et al., SIGIR 2020." in text
    assert re.search(r"^  mode: a \| b; default \"a\"\n      \(no description\)$", text, re.MULTILINE)
    assert re.search(r"^  rules: list of mappings \(keys below\); default \[\]$", text, re.MULTILINE)
    assert "      Keys of each item of rules: A probe's rule." in text
    assert _keys_at(text, 8) == ["word", "weight"]
    assert {"probe_ref.mode", "probe_ref.rules.weight"} <= set(undocumented_fields())


def test_help_shows_the_bounds_describe_shows():
    """``help()`` (the numpydoc Parameters section) and ``ragkit describe`` write a field's bounds with the same
    helper: before, help() showed only ``>=``/``<`` bounds, so rule_router's ``rules`` (at least 1 item) and
    score_router's labels (at least 1 character) read as unbounded there while describe showed the bound."""
    from ragkit.params import _bounds_text

    seen = 0
    for name in registry.names():
        cls = registry.get(name)
        described = " ".join(describe(name).split())
        for field_name, field in cls.Params.model_fields.items():
            if not (bounds := _bounds_text(field)):
                continue
            seen += 1
            head = next(line for line in (cls.__doc__ or "").splitlines() if line.startswith(f"{field_name} : "))
            assert f"({bounds})" in head, f"{name}.{field_name}: help() writes {head!r}, describe {bounds!r}"
            assert bounds in described, f"{name}.{field_name}"
    assert seen
    rule_router = registry.get("rule_router").__doc__ or ""
    assert "\nrules : list of Rule (at least 1 item)\n" in rule_router
    assert "\ndefault : str (at least 1 character), default 'default'\n" in rule_router


def test_one_set_of_field_texts_in_two_styles():
    """The type and default of a field, in numpydoc style (``help()``: ``None``, Python's repr) and in YAML style
    (``ragkit describe``: ``null``, YAML's spelling), from the same helpers in :mod:`ragkit.params`."""
    from typing import Annotated, Optional

    from ragkit.params import _bounds_text, _default_text, _type_text

    class P(Params):
        mode: Optional[Literal["a", "b"]] = Field("a", description="Mode.")
        tag: Optional[Annotated[str, Field(min_length=2, pattern="^t")]] = Field(None, description="Tag.")
        flag: bool = Field(True, description="Flag.")
        weights: dict[str, float] = Field(default_factory=dict, description="Weights.")

    fields = P.model_fields
    assert _type_text(fields["mode"].annotation) == "{'a', 'b'} or None"
    assert _type_text(fields["mode"].annotation, "yaml") == "a | b or null"
    assert _type_text(fields["flag"].annotation) == "bool"
    assert _type_text(fields["flag"].annotation, "yaml") == "bool (true | false)"
    assert _type_text(fields["weights"].annotation) == "mapping"
    assert _type_text(fields["weights"].annotation, "yaml") == "mapping of string to float"
    assert _default_text(fields["mode"]) == "default 'a'"
    assert _default_text(fields["mode"], "yaml") == 'default "a"'
    assert _default_text(fields["tag"], "yaml") == "default null"
    assert _default_text(fields["weights"]) == "default {}"
    assert _bounds_text(fields["tag"]) == "at least 2 characters, matching the regex ^t"
    assert "tag : str or None (at least 2 characters, matching the regex ^t), default None" in params_section(P)
