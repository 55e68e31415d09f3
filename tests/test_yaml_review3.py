"""Pipeline YAML, third review: an error of several problems keeps every one of them, a route branch behind
an earlier rule that always matches first can never run, ``ragkit validate`` refuses a saved folder whose files
changed after saving, and the hints for common misshapes show the shape that loads."""

from __future__ import annotations

import logging
import random
import re

import pytest
import yaml

from ragkit import Corpus, Pipeline
from ragkit.errors import ConfigError, ParamError
from ragkit.pipelines import Route
from ragkit.pipelines.routers import RuleRouter
from ragkit.pipelines.yaml import load_yaml
from ragkit.registry import PLUGIN_HINT
from ragkit.retrievers import BM25


def _error(text: str) -> str:
    with pytest.raises(ConfigError) as e:
        load_yaml(text)
    return str(e.value)


def _cli(*args: object):
    from typer.testing import CliRunner

    from ragkit.cli import app

    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})


# -- 1. every problem of a combined error is kept -------------------------------------------------------------


def test_a_branch_problem_after_an_unknown_operator_is_kept():
    """The unknown-operator advice was cut from an earlier (multi-line) problem to the END of its text, which
    lost the branches' later lines: branches[1].dense.k was never reported."""
    text = "pipeline:\n  - parallel:\n      branches: [bm52: {}, dense: {k: 0}]\n      fuse: {rrff: {}}\n"
    message = _error(text)
    lines = message.split("\n")
    assert any("branches[0].bm52: unknown operator 'bm52'" in x for x in lines)
    assert any("branches[1].dense.k: expected a positive integer, got 0" in x for x in lines)
    assert any("fuse.rrff: unknown operator 'rrff'" in x for x in lines)
    assert message.count(PLUGIN_HINT) == 1 and PLUGIN_HINT in lines[-1]  # the advice once, on the last line


def test_every_problem_of_nested_combined_errors_is_kept():
    text = ("pipeline:\n  - parallel:\n      branches: [bm52: {}, dense: {k: 0}, bm25: {kk: 1}]\n"
            "      fuse: {rrff: {}}\n  - top_kk: {k: 5}\n")
    message = _error(text)
    for part in ("branches[0].bm52", "branches[1].dense.k", "branches[2].bm25.kk", "fuse.rrff", "pipeline[1].top_kk"):
        assert part in message, part
    assert message.count(PLUGIN_HINT) == 1 and PLUGIN_HINT in message.split("\n")[-1]


# -- 2. a branch behind an earlier rule that always matches first ---------------------------------------------

ROUTE = ("pipeline:\n  - bm25: {{}}\n  - route:\n      router: {{rule_router: {{rules: {rules}, default: long}}}}\n"
         "      branches: {branches}\n")


def _warned(text: str, caplog) -> str:  # noqa: ANN001
    """The ragkit warnings of loading the pipeline YAML ``text`` (it loads: a shadowed rule is warned of, so that
    a pipeline saved with one, before the check existed, still loads)."""
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        Pipeline.from_yaml(text)
    return "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("ragkit"))


@pytest.mark.parametrize(("rules", "said"), [
    ("[{label: short, max_words: 4}, {label: mid, max_words: 3}]",  # a rule behind a wider one
     ["route: branches ['mid'] can never run", "router.rule_router.rules[1] {label: mid, max_words: 3} never matches",
      "rules[0] {label: short, max_words: 4}"]),
    ("[{label: short, max_words: 4}, {label: mid, min_words: 5}]",  # the default behind rules covering every length
     ["branches ['long'] can never run", "router.rule_router.default ('long') is never given"]),
])
def test_a_branch_behind_earlier_rules_that_always_match_first_is_warned_of(rules, said, caplog):
    text = ROUTE.format(rules=rules, branches="{short: [top_k: {k: 5}], mid: [top_k: {k: 3}], long: []}")
    message = _warned(text, caplog)
    for part in said:
        assert part in message, part


def test_a_saved_pipeline_with_a_shadowed_rule_still_loads(tmp_path, caplog):
    """The shadowing check refused a pipeline saved before it existed: Pipeline.load raised ConfigError."""
    text = ROUTE.format(rules="[{label: a, max_words: 3}, {label: b, max_words: 2}]",
                        branches="{a: [top_k: {k: 2}], b: [top_k: {k: 1}], long: []}")
    corpus = Corpus.from_texts(["red apples", "green pears", "red cars"])
    pipe = Pipeline.from_yaml(text).fit(corpus)
    pipe.save(tmp_path / "p")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        again = Pipeline.load(tmp_path / "p")
    assert "branches ['b'] can never run" in caplog.text
    assert [list(d) for d in again.search(["red", "a b c d e"]).doc_ids] == [
        list(d) for d in pipe.search(["red", "a b c d e"]).doc_ids]


@pytest.mark.parametrize("rules", [
    [{"label": "a", "max_words": 4}, {"label": "b", "max_words": 6}],
    [{"label": "a", "max_words": 4, "keywords": ["x"]}, {"label": "b", "max_words": 3}],
    [{"label": "a", "keywords": ["x"]}, {"label": "b", "keywords": ["x", "y"]}],
    [{"label": "a", "regex": "x"}, {"label": "b", "regex": "y", "max_words": 2}],
    [{"label": "a", "max_words": 3}, {"label": "b", "min_words": 5}],
    [{"label": "a", "min_words": 2, "max_words": 3}, {"label": "b", "max_words": 3}],
])
def test_rules_an_earlier_rule_does_not_contain_stay_reachable(rules):
    router = RuleRouter(rules=rules, default="z")
    assert router.possible_labels() == ["a", "b", "z"] and router.shadowed() == {}


@pytest.mark.parametrize(("rules", "possible"), [
    ([{"label": "a", "max_words": 4}, {"label": "b", "max_words": 3}], ["a", "z"]),
    ([{"label": "a", "keywords": ["x", "y"]}, {"label": "b", "keywords": ["x"]}], ["a", "z"]),
    ([{"label": "a", "regex": "x"}, {"label": "b", "regex": "x", "min_words": 3}], ["a", "z"]),
    ([{"label": "a", "min_words": 0}, {"label": "b", "max_words": 3}], ["a"]),
    ([{"label": "a", "max_words": 2}, {"label": "b", "min_words": 3, "max_words": 5}, {"label": "c", "max_words": 5}],
     ["a", "b", "z"]),
    ([{"label": "a", "max_words": 3}, {"label": "b", "max_words": 2}, {"label": "b", "min_words": 9}],
     ["a", "b", "z"]),  # one of b's rules can match
])
def test_shadowed_rules_are_not_possible_labels(rules, possible):
    assert RuleRouter(rules=rules, default="z").possible_labels() == possible


def test_every_label_a_router_gives_is_a_possible_label():
    """Conservative: on random rules and queries, no label given is one possible_labels leaves out."""
    rng = random.Random(0)
    words = ["x", "y", "q"]
    queries = [" ".join(rng.choice(words) for _ in range(n)) for n in range(9) for _ in range(6)]
    for _ in range(300):
        rules = []
        for i in range(rng.randint(1, 4)):
            rule: dict = {"label": f"l{i}"}
            lo = rng.choice([None, 0, 1, 2, 3, 5])
            hi = rng.choice([None, 2, 3, 4, 6])
            if lo is not None:
                rule["min_words"] = lo
            if hi is not None and (lo is None or hi >= lo):
                rule["max_words"] = hi
            if rng.random() < 0.3:
                rule["keywords"] = rng.sample(words, rng.randint(1, 2))
            if rng.random() < 0.2:
                rule["regex"] = rng.choice(["x", "y"])
            if len(rule) == 1:
                rule["max_words"] = 4
            rules.append(rule)
        router = RuleRouter(rules=rules, default="d")
        assert set(router.labels(queries)) <= set(router.possible_labels()), rules


def test_route_in_python_warns_of_a_shadowed_branch(caplog):
    router = RuleRouter(rules=[{"label": "short", "max_words": 4}, {"label": "mid", "max_words": 3}], default="long")
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        Route(router, {"short": BM25(), "mid": BM25(), "long": BM25()})
    assert re.search(r"branches \['mid'\] can never run.*rules\[1\]", caplog.text), caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        Route(router, {"short": BM25(), "long": BM25()})  # every label it can give has a branch
    assert not caplog.records
    with pytest.raises(ParamError, match=r"branches \['mdi'\] can never run.*did you mean 'mid'"):
        Route(router, {"short": BM25(), "mid": BM25(), "mdi": BM25(), "long": BM25()})  # (a misspelt label: refused)


# -- 3. validate loads a saved folder as search does ----------------------------------------------------------


def test_validate_refuses_a_saved_folder_changed_after_saving(tmp_path):
    corpus = Corpus(ids=["a", "b", "c"], texts=["red apple", "green pear", "blue plum"])
    folder = tmp_path / "saved"
    Pipeline.from_yaml("pipeline: [bm25: {k: 2}]").fit(corpus).save(folder)
    ok = _cli("validate", folder)
    assert ok.exit_code == 0, ok.output
    with open(folder / "pipeline.yaml", "a", encoding="utf-8") as f:
        f.write("# edited\n")
    res = _cli("validate", folder)
    assert res.exit_code == 2, res.output
    said = "".join(res.output.split())  # (rich wraps long lines)
    assert f"{folder / 'pipeline.yaml'}: checksum mismatch".replace(" ", "") in said
    assert "(ragkit search --index and Pipeline.load refuse this folder too)".replace(" ", "") in said


# -- 4. hints show a shape that loads ----------------------------------------------------------------------------


def _suggested(message: str) -> str:
    """The last `...` example of a message."""
    return re.findall(r"`([^`]+)`", message)[-1]


def test_a_pipeline_written_as_a_mapping_is_suggested_as_a_list_that_loads():
    """The suggestion kept a parallel's branches a mapping, so applying it gave a second error."""
    text = ("pipeline:\n  parallel:\n    branches:\n      bm25: {k: 100}\n      dense: {k: 100}\n"
            "    fuse:\n      rrf: {k: 60}\n")
    fix = _suggested(_error(text))
    assert fix.startswith("pipeline: [parallel:")
    pipe = load_yaml(fix)
    assert [type(b).__name__ for b in pipe.steps[0].branches] == ["BM25", "Dense"]


def test_nested_mappings_in_a_suggested_list_load():
    text = ("pipeline:\n  bm25: {k: 100}\n  loop:\n    body: {prf: {}, bm25: {}}\n    until: {topk_stable: {}}\n"
            "  route:\n    router: {rule_router: {rules: [{label: short, max_words: 4}], default: long}}\n"
            "    branches: {short: {bm25: {}, top_k: {k: 5}}, long: []}\n"
            "  parallel:\n    branches: {lex: [bm25: {}], sem: {dense: {}}}\n    fuse: {rrf: {}}\n")
    pipe = load_yaml(_suggested(_error(text)))
    assert [s.name for s in pipe.steps] == ["bm25", "loop", "route", "parallel"]


@pytest.mark.parametrize(("written", "said"), [
    ("pipeline:\n  - bm25: {k:10}\n", "pipeline[0].bm25.k:10: read as one key 'k:10' with no value: YAML needs a "
                                      "space after the colon: `k: 10`"),
    ("pipeline:\n  - bm25:\n      k:10\n", "YAML needs a space after the colon, and the parameters go in a mapping: "
                                           "`bm25: {k: 10}`"),
    ("pipeline:\n  - bm25: {}\n  - loop: {body: [prf: {}, bm25: {}], until: {topk_stable: {}}, max_iters:2}\n",
     "pipeline[1].loop.max_iters:2: read as one key 'max_iters:2' with no value: YAML needs a space after the "
     "colon: `max_iters: 2`"),
])
def test_no_space_after_a_colon_is_said(written, said):
    message = _error(written)
    assert said in message and "did you mean" not in message


def test_an_empty_pipeline_shows_a_list_of_steps():
    fix = _suggested(_error("pipeline:\n"))
    assert "list the steps under it" in _error("pipeline:\n")
    load_yaml(fix)


def test_route_branches_written_as_a_list_show_the_mapping():
    text = ROUTE.format(rules="[{label: short, max_words: 4}]", branches="") + \
        "        - short: [top_k: {k: 5}]\n        - long: []\n"
    message = _error(text)
    assert "drop the '- ' before each label" in message
    fix = _suggested(message)
    pipe = load_yaml(ROUTE.format(rules="[{label: short, max_words: 4}]", branches=fix.removeprefix("branches: ")))
    assert set(pipe.steps[1].branches) == {"short", "long"}


def test_parameters_written_as_a_list_show_the_mapping():
    message = _error("pipeline:\n  - bm25: {}\n  - top_k:\n    - k: 10\n")
    assert "parameters are a mapping, not a list: drop the '- ' before each, e.g. `top_k: {k: 10}`" in message
    assert yaml.safe_load(_suggested(message)) == {"top_k": {"k": 10}}


# -- 5. validate notes a k that more documents than reach it ------------------------------------------------------


def _notes(tmp_path, text: str) -> list[str]:
    f = tmp_path / "p.yaml"
    f.write_text(text, encoding="utf-8")
    res = _cli("validate", f)
    assert res.exit_code == 0, res.output
    return [" ".join(x.split()) for x in re.split(r"\n(?=\S)", res.output) if x.startswith("note:")]


def test_validate_notes_a_top_k_deeper_than_the_retriever_before_it(tmp_path):
    notes = _notes(tmp_path, "pipeline:\n  - bm25: {k: 10}\n  - top_k: {k: 100}\n")
    assert notes == ["note: pipeline[1].top_k keeps k: 100, but pipeline[0].bm25 before it returns at most 10 "
                     "documents (its k), so it keeps all of them; give pipeline[0].bm25 a k of 100 or more, or top_k "
                     "a k of 10 or less"]


def test_validate_notes_k_chains_inside_branches_and_only_where_the_depth_is_known(tmp_path):
    notes = _notes(tmp_path, (
        "pipeline:\n  - bm25: {k: 10}\n  - parallel:\n      branches:\n        - [top_k: {k: 5}, mmr: {k: 20}]\n"
        "        - [bm25: {k: 50}, top_k: {k: 50}]\n        - [top_k: {k: 10}]\n"
        "  - top_k: {k: 1000}\n"  # after a parallel: its depth is not worked out
        "  - loop: {body: [top_k: {k: 400}, bm25: {k: 3}], until: {topk_stable: {}}}\n"))
    assert len(notes) == 1 and notes[0].startswith(
        "note: pipeline[1].parallel.branches[0][1].mmr keeps k: 20, but pipeline[1].parallel.branches[0][0].top_k "
        "before it returns at most 5 documents")


def test_validate_notes_nothing_where_the_ks_chain(tmp_path):
    assert _notes(tmp_path, "pipeline:\n  - bm25: {k: 100}\n  - mmr: {k: 10}\n  - top_k: {k: 10}\n") == []
