"""Pipeline YAML, second review: strings that look like YAML 1.2 numbers keep their quotes when written,
wrongly nested files say how to nest them, an eval result file is named as one, every problem has its
line (labels with spaces or ': '), files nested too deeply are refused with a message."""

from __future__ import annotations

import json
import random
import re

import pytest
import yaml

from ragkit import Corpus, Pipeline
from ragkit.errors import ConfigError
from ragkit.retrievers import BM25

#: strings that YAML 1.1 or 1.2 (or this loader) reads as something else when unquoted
TRICKY = ["1e3", "1.5e3", "1e-3", "2e5", "1E3", "+1e3", "-2e5", "1_000", "0x1f", "0o17", "0b101", "010", "1:2",
          "1:30", ".inf", "-.inf", ".nan", "NaN", "nan", "inf", "yes", "no", "on", "off", "y", "n", "true", "False",
          "null", "Null", "~", "", " ", " 1", "1 ", "2024-01-01", "2024-01-01 10:00:00", "1.", ".5", "5.", "-",
          "+", "0", "-0", "00", "1,000", "=", "<<", "@x", "`x", "#x", "x #y", "a: b", "- a", "[a]", "{a}", "'",
          '"', "\\", "\t1", "1\n", "é", "1e3 ", "e3", "1e", "0x", "0xg", "1__0", "_1"]


def _random_strings(n: int, seed: int = 0) -> list[str]:
    """``n`` short strings over an alphabet of the characters YAML's number, boolean and null forms use."""
    rng = random.Random(seed)
    alphabet = "0123456789eE.+-_xobXO:infaNIyYsnotrulF~ "
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 6))) for _ in range(n)]


def _reload(p: Pipeline) -> Pipeline:
    return Pipeline.from_yaml(p.to_yaml())


def test_every_string_is_written_so_that_the_loader_reads_the_same_string():
    """The writer (YAML 1.1's resolvers) wrote '1e3' bare, which the loader (YAML 1.2 numbers) read as 1000.0."""
    from ragkit.pipelines.yaml import _Dumper, _UniqueKeyLoader

    for s in TRICKY + _random_strings(3000):
        for doc in ({"v": s}, {s: [s]}, [s]):
            text = yaml.dump(doc, Dumper=_Dumper, sort_keys=False, default_flow_style=None, allow_unicode=True)
            assert yaml.load(text, Loader=_UniqueKeyLoader) == doc, (s, text)


def test_description_and_filter_strings_round_trip_through_to_yaml():
    for s in TRICKY:
        p = Pipeline([BM25(filter={"code": s})])
        p.description = s
        back = _reload(p)
        assert back.description == s and back.steps[0].params.filter == {"code": s}, s


@pytest.mark.parametrize("s", ["1e3", "1E5", "1e-3", "2e5", "1_000", "0x1f", "yes", "null", "1:2", " 1", "2024-01-01"])
def test_labels_names_and_keywords_that_look_like_numbers_round_trip(s):
    """A route label, a rule's label and keywords, and a parallel's names written as '1e3' no longer loaded."""
    q = json.dumps(s)
    text = f"""
pipeline:
  - parallel:
      branches: [bm25: {{}}, bm25: {{variant: okapi}}]
      names: [{q}, {json.dumps(s + "x")}]
  - route:
      router: {{rule_router: {{rules: [{{label: {q}, keywords: [{q}]}}], default: other}}}}
      branches: {{{q}: [top_k: {{k: 5}}], other: []}}
"""
    p = Pipeline.from_yaml(text)
    y = p.to_yaml()
    back = Pipeline.from_yaml(y)
    assert repr(back) == repr(p) and back.to_yaml() == y


def test_a_saved_pipeline_with_a_number_like_filter_string_loads(tmp_path):
    """``filter: {code: '1e3'}`` was saved bare; loading refused: 'the folder was changed after saving'."""
    corpus = Corpus.from_records([{"_id": "d1", "title": "", "text": "heart risk", "metadata": {"code": "1e3"}},
                                  {"_id": "d2", "title": "", "text": "heart risk", "metadata": {"code": "2e3"}}])
    p = Pipeline.from_yaml("pipeline: [bm25: {filter: {code: '1e3'}}]\n").fit(corpus)
    p.save(tmp_path / "p")
    back = Pipeline.load(tmp_path / "p")
    assert back.steps[0].params.filter == {"code": "1e3"}
    assert list(back.search(["heart risk"]).to_dict()["q0"]) == ["d1"]


def test_the_quote_hint_does_not_show_the_number_yaml_made_of_the_text():
    """A rule label written 1e3 was told: quote it, e.g. "1000.0" (which is not what was written)."""
    text = ("pipeline:\n  - route:\n      router: {rule_router: {rules: [{label: 1e3, max_words: 3}], default: b}}\n"
            "      branches: {'1e3': [bm25: {}], b: []}\n")
    with pytest.raises(ConfigError, match=r"rules\[0\]\.label: expected a string, got 1000\.0; .*quote") as e:
        Pipeline.from_yaml(text)
    assert '"1000.0"' not in str(e.value)


@pytest.mark.parametrize("label", ["long query", "x: y", "v1", "a:b"])
def test_every_problem_under_a_route_label_has_its_line(tmp_path, label):
    """A label with a space gave no line, and one with ': ' the line of 'branches:' (the path was cut at ': ')."""
    f = tmp_path / "p.yaml"
    f.write_text(f"""pipeline:
  - route:
      router: {{rule_router: {{rules: [{{label: '{label}', max_words: 3}}], default: other}}}}
      branches:
        other: [bm25: {{}}]
        '{label}':
          - bm25:
              k: -1
""")
    with pytest.raises(ConfigError) as e:
        Pipeline.from_yaml(f)
    assert str(e.value) == (f"{f}: line 8: pipeline[0].route.branches.{label}[0].bm25.k: expected a positive "
                            "integer, got -1")


def test_the_quote_hint_shows_the_text_as_written_in_the_file_or_text(tmp_path):
    text = ("pipeline:\n  - route:\n      router: {rule_router: {rules: [{label: 1e3, keywords: [0x1f]}], "
            "default: b}}\n      branches: {'1e3': [bm25: {}], b: []}\n")
    f = tmp_path / "p.yaml"
    f.write_text(text)
    for source in (text, f):
        with pytest.raises(ConfigError) as e:
            Pipeline.from_yaml(source)
        lines = str(e.value).split("\n")[-2:]
        assert lines[0].endswith('label: expected a string, got 1000.0; YAML reads unquoted numbers (10, 1.5, 1e3, '
                                 '0x1f) as numbers: quote the value as you wrote it: "1e3"'), lines
        assert lines[1].endswith('keywords[0]: expected a string, got 31; YAML reads unquoted numbers (10, 1.5, '
                                 '1e3, 0x1f) as numbers: quote the value as you wrote it: "0x1f"'), lines
        assert lines[0].startswith("line 3: " if source is f else "pipeline[0]")


def _eval_result(tmp_path):
    payload = {"dataset": "sf", "split": "test", "pipeline": "pipeline:\n- bm25: {k: 50}\n", "n_queries": 2,
               "metrics": {"ndcg@10": 0.5}, "per_query": {"ndcg@10": {"1": 0.0, "2": 1.0}},
               "timings": {"total_s": 1.0}, "settings": {}, "machine": {}, "date": "2025-01-01"}
    f = tmp_path / "linear.json"
    f.write_text(json.dumps(payload, indent=2))
    return f


def test_an_eval_result_file_is_named_as_one(tmp_path):
    """``ragkit validate out.json`` (a ``ragkit eval -o`` result) printed nine 'unknown top-level key' lines
    and then 'pipeline: expected a non-empty list of operators, got 'pipeline:\\n- bm25...''."""
    from ragkit.pipelines.yaml import validate_file

    f = _eval_result(tmp_path)
    for load in (validate_file, Pipeline.from_yaml):
        with pytest.raises(ConfigError) as e:
            load(f)
        message = str(e.value)
        assert "\n" not in message and "unknown top-level key" not in message
        assert message.startswith(f"{f}: this is a ragkit eval result file")
        assert "its 'pipeline' key, as YAML text" in message and f"jq -r .pipeline {f} > pipeline.yaml" in message


def test_a_files_problems_are_in_the_order_of_their_lines(tmp_path):
    """Top-level key problems came first, then the steps' (line 3 before line 2)."""
    f = tmp_path / "p.yaml"
    f.write_text("pipeline:\n  - bm25: {kk: 1}\nfoo: 1\n  # c\n")
    with pytest.raises(ConfigError) as e:
        Pipeline.from_yaml(f)
    lines = str(e.value).split("\n")[1:]
    assert [t.split(":")[0] for t in lines] == ["line 2", "line 3"], lines


def _nested_parallels(n: int) -> str:
    s = "bm25: {}"
    for _ in range(n):
        s = "parallel: {branches: [" + s + ", bm25: {variant: okapi}]}"
    return "pipeline: [" + s + "]\n"


@pytest.mark.parametrize("text", ["pipeline: " + "[" * 1000 + "bm25: {}" + "]" * 1000 + "\n", _nested_parallels(200)],
                         ids=["1000 lists", "200 parallels"])
def test_a_file_nested_too_deeply_is_refused_with_its_name(tmp_path, text):
    """~200 nested parallels or ~1000 nested lists crashed ``ragkit validate`` with PyYAML's RecursionError."""
    from ragkit.pipelines.yaml import validate_file

    f = tmp_path / "deep.yaml"
    f.write_text(text)
    for load, source, where in ((validate_file, f, str(f)), (Pipeline.from_yaml, text, "<text>")):
        with pytest.raises(ConfigError, match=rf"^{re.escape(where)}: nested too deeply: "):
            load(source)
    assert len(Pipeline.from_yaml(_nested_parallels(20)).steps) == 1  # a deep but readable file still loads


_BR = "branches: [bm25: {}, bm25: {variant: okapi}]"
_RULES = "{rules: [{label: a, max_words: 3}], default: b}"
NESTING = [  # (file text, the whole message after the file name)
    ("pipeline:\n  - bm25:\n    k: 10\n",
     "line 2: pipeline[0]: expected exactly one operator key, got 2: ['bm25', 'k']; k is a parameter of bm25: indent "
     "it under 'bm25:', e.g. `- bm25: {k: 10}`"),
    ("pipeline:\n  - parallel:\n    branches: [bm25: {}, top_k: {k: 3}]\n",
     "line 2: pipeline[0]: expected exactly one operator key, got 2: ['parallel', 'branches']; branches is a key of "
     "parallel: indent it under 'parallel:', e.g. `- parallel: {branches: [{bm25: {}}, {top_k: {k: 3}}]}`"),
    ("pipeline:\n  - bm25: {k: 10}\n    top_k: {k: 5}\n",
     "line 2: pipeline[0]: expected exactly one operator key, got 2: ['bm25', 'top_k']; a list item holds one step: "
     "start each of bm25, top_k with its own '- ', as in `[bm25: {k: 10}, top_k: {k: 5}]`"),
    ("pipeline:\n  - loop:\n      body:\n        prf: {}\n        bm25: {}\n      until: {topk_stable: {}}\n",
     "line 3: pipeline[0].loop.body: expected exactly one operator key, got 2: ['prf', 'bm25']; a mapping of 2 "
     "operators where a step or a list of steps is expected: write the steps as a list, e.g. "
     "`body: [prf: {}, bm25: {}]`"),
    (f"pipeline:\n  - route:\n      router: {_RULES}\n      branches: {{a: [bm25: {{}}], b: []}}\n",
     "line 3: pipeline[0].route.router: expected exactly one operator key, got 2: ['rules', 'default']; rules and "
     "default are parameters of rule_router: router takes one router operator with its parameters beneath it, e.g. "
     "`router: {rule_router: {rules: [{label: a, max_words: 3}], default: b}}`"),
    (f"pipeline:\n  - route:\n      rule_router: {_RULES}\n      branches: {{a: [bm25: {{}}], b: []}}\n",
     "line 3: pipeline[0].route.rule_router: rule_router is a router, not a key of route: nest it under 'router:', "
     "as in `router: {rule_router: {rules: [{label: a, max_words: 3}], default: b}}`"),
    (f"pipeline:\n  - parallel:\n      {_BR}\n      rrf: {{k: 60}}\n",
     "line 4: pipeline[0].parallel.rrf: rrf is a fuser, not a key of parallel: nest it under 'fuse:', as in "
     "`fuse: {rrf: {k: 60}}`"),
    ("pipeline:\n  - loop:\n      body: [prf: {}, bm25: {}]\n      topk_stable: {k: 10}\n",
     "line 4: pipeline[0].loop.topk_stable: topk_stable is a judge, not a key of loop: nest it under 'until:', as in "
     "`until: {topk_stable: {k: 10}}`"),
    (f"pipeline:\n  - parallel:\n      {_BR}\n      fuse: {{k: 60}}\n",
     "line 4: pipeline[0].parallel.fuse: expected one fuser operator (rrf, weighted) with its parameters beneath it, "
     "got 'k', a parameter of rrf: nest it under the operator, e.g. `fuse: {rrf: {k: 60}}`"),
    ("pipeline:\n  - loop:\n      body: [prf: {}, bm25: {}]\n      until: {k: 10}\n",
     "line 4: pipeline[0].loop.until: expected one judge operator (max_only, score_reached, topk_stable) with its "
     "parameters beneath it, got 'k', a parameter of topk_stable: nest it under the operator, e.g. "
     "`until: {topk_stable: {k: 10}}`"),
    (f"pipeline:\n  - parallel:\n      {_BR}\n      bm25: {{}}\n",
     "line 4: pipeline[0].parallel.bm25: bm25 is an operator, not a key of parallel (which takes ['branches', "
     "'fuse', 'names']): put it in a branch in 'branches:'"),
]


@pytest.mark.parametrize("text, message", NESTING, ids=range(len(NESTING)))
def test_a_wrongly_nested_file_is_told_how_to_nest_it(tmp_path, text, message):
    """Wrong indentation or nesting was reported as 'expected exactly one operator key, got 2: ['bm25', 'k']',
    'unknown operator 'k'' or 'rule_router: unknown key (did you mean 'router'?)' after 'router: missing'."""
    f = tmp_path / "p.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError) as e:
        Pipeline.from_yaml(f)
    assert str(e.value) == f"{f}: {message}"


@pytest.mark.parametrize("text, message", [
    ("pipeline:\n  - route:\n      router: {rule_router: {rules: [{label: a, max_words: 3}], default: b}}\n"
     "      branches:\n        a:\n        b: [bm25: {}]\n",
     "line 5: pipeline[0].route.branches.a: empty; expected a step or a list of steps, or `a: []` for a branch that "
     "passes its queries through unchanged"),
    ("pipeline:\n  - bm25: {}\n  -\n",
     "line 3: pipeline[1]: empty (nothing is written after its '-' or key); expected a mapping with one operator "
     "name as key (e.g. 'bm25: {k: 100}')"),
    ("pipeline:\n  - route:\n      router: {rule_router: {rules: []}}\n      branches: {default: [bm25: {}]}\n",
     "line 3: pipeline[0].route.router.rule_router.rules: expected at least 1 item, got []"),
], ids=["route branch", "step", "rules"])
def test_empty_items_and_lists_are_named_as_such(tmp_path, text, message):
    """An empty route branch 'a:' said 'got NoneType None' (an empty list there passes queries through), and
    'rules: []' 'expected at least 1 items'."""
    f = tmp_path / "p.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError) as e:
        Pipeline.from_yaml(f)
    assert str(e.value) == f"{f}: {message}"


NESTING_2 = [  # (file text, the whole message after the file name)
    ("pipeline:\n  - bm25:\n    k: 10\n    b: 0.5\n",  # several parameters: 'k, b are a parameters of bm25'
     "line 2: pipeline[0]: expected exactly one operator key, got 3: ['bm25', 'k', 'b']; k and b are parameters of "
     "bm25: indent them under 'bm25:', e.g. `- bm25: {k: 10, b: 0.5}`"),
    ("pipeline:\n  - bm25: {}\n  - loop:\n    body: [prf: {}, bm25: {}]\n    until: {max_only: {}}\n",
     "line 3: pipeline[1]: expected exactly one operator key, got 3: ['loop', 'body', 'until']; body and until are "
     "keys of loop: indent them under 'loop:', e.g. `- loop: {body: [{prf: {}}, {bm25: {}}], until: {max_only: {}}}`"),
    # a key of the composite indented under its last branch or step: cited at the misplaced key's own line
    ("pipeline:\n  - parallel:\n      branches:\n        - bm25: {}\n        - bm25: {variant: okapi}\n"
     "          fuse: {rrf: {}}\n",
     "line 6: pipeline[0].parallel.branches[1].fuse: fuse is a key of parallel, not of bm25: dedent it to the level of "
     "'branches:' (written under bm25, it makes branches[1] a mapping of 2 keys, ['bm25', 'fuse'], where one operator "
     "is expected)"),
    ("pipeline:\n  - bm25: {}\n  - loop:\n      body:\n        - prf: {}\n        - bm25: {}\n"
     "          until: {max_only: {}}\n",  # (and 'until: missing' is not said as well)
     "line 7: pipeline[1].loop.body[1].until: until is a key of loop, not of bm25: dedent it to the level of 'body:' "
     "(written under bm25, it makes body[1] a mapping of 2 keys, ['bm25', 'until'], where one operator is expected)"),
    # a mapping of steps where a list goes: only 'expected a non-empty list of operators, got {...}'
    ("pipeline:\n  bm25: {k: 10}\n  top_k: {k: 5}\n",
     "line 1: pipeline: expected a non-empty list of operators, got {'bm25': {'k': 10}, 'top_k': {'k': 5}}; write the "
     "steps as a list, e.g. `pipeline: [bm25: {k: 10}, top_k: {k: 5}]`"),
    ("pipeline:\n  - parallel:\n      branches:\n        bm25: {}\n        dense: {}\n",
     "line 3: pipeline[0].parallel.branches: expected a non-empty list of branches, got {'bm25': {}, 'dense': {}}; "
     "write the branches as a list, e.g. `branches: [bm25: {}, dense: {}]`"),
    ("pipeline:\n  - parallel:\n      branches:\n        lex: {bm25: {}}\n        sem: [bm25: {variant: okapi}]\n",
     "line 3: pipeline[0].parallel.branches: expected a non-empty list of branches, got {'lex': {'bm25': {}}, 'sem': "
     "[{'bm25': {'variant': 'okapi'}}; a parallel's branches are a list, and 'names:' names them, e.g. `branches: "
     "[bm25: {}, [bm25: {variant: okapi}]], names: [lex, sem]`"),
    # the example is an operator of the kind the place takes, with parameters it builds with (not 'bm25: {k: 100}')
    ("pipeline:\n  - loop:\n      body: [prf: {}, bm25: {}]\n      until: topk_stable\n",
     "line 4: pipeline[0].loop.until: expected a mapping with one judge operator name as key (max_only, "
     "score_reached, topk_stable; e.g. 'max_only: {}'), got str 'topk_stable'; an operator with its default "
     "parameters is written 'topk_stable: {}'"),
    ("pipeline:\n  - bm25: {}\n  - route:\n      router: score_router\n      branches: {high: [], low: []}\n",
     "line 4: pipeline[1].route.router: expected a mapping with one router operator name as key (rule_router, "
     "score_router; e.g. 'score_router: {feature: top1, threshold: 20.0}'), got str 'score_router'; an operator is "
     "written as a mapping of its name to its parameters, e.g. 'score_router: {feature: top1, threshold: 20.0}'"),
    ("pipeline:\n  - parallel:\n      branches: [bm25: {}, dense: {}]\n      fuse: [rrf: {}]\n",
     "line 4: pipeline[0].parallel.fuse: expected a mapping with one fuser operator name as key (rrf, weighted; e.g. "
     "'rrf: {k: 60}'), got list [{'rrf': {}}]; fuse takes one fuser, not a list: write it without the '- ' or "
     "brackets, e.g. `fuse: {rrf: {}}`"),
    ("pipeline:\n  - loop:\n      body: [prf: {}, bm25: {}]\n      until: bm25\n",
     "line 4: pipeline[0].loop.until: expected a mapping with one judge operator name as key (max_only, "
     "score_reached, topk_stable; e.g. 'max_only: {}'), got str 'bm25'; bm25 is a retriever, and until takes a judge"),
    ("pipeline:\n  - loop:\n      body: [prf: {}, bm25: {}]\n",  # was 'pipeline[0].loop.until: missing'
     "line 2: pipeline[0].loop.until: missing; a loop needs 'until:', the judge that decides when each query's loop "
     "stops (max_only, score_reached, topk_stable), e.g. `until: {max_only: {}}`"),
    ("pipeline:\n  - route:\n      branches: {a: [bm25: {}]}\n",
     "line 2: pipeline[0].route.router: missing; a route needs 'router:', the router that labels each query "
     "(rule_router, score_router), e.g. `router: {score_router: {feature: top1, threshold: 20.0}}`"),
    # an empty parallel branch: how to keep the incoming ranking (a route's [] passes through; a parallel's cannot)
    ("pipeline:\n  - bm25: {}\n  - parallel:\n      branches: [[], dense: {}]\n",
     "line 4: pipeline[1].parallel.branches[0]: expected a non-empty list of operators, got []; a parallel's branch "
     "is not a pass-through as a route's [] is (each branch makes a ranking to fuse): to fuse the ranking that "
     "reaches the parallel with the other branches', write a branch that keeps it, e.g. `- top_k: {k: 100}` (its k "
     "at least that ranking's depth)"),
]


@pytest.mark.parametrize("text, message", NESTING_2, ids=range(len(NESTING_2)))
def test_hints_name_the_right_nesting_and_kind_of_operator(tmp_path, text, message):
    """'k, b are a parameters of bm25'; 'fuse:' under the last branch and a mapping of steps under 'pipeline:' had
    no hint; the example for 'until:', 'router:' or 'fuse:' was 'bm25: {k: 100}' (and 'rule_router: {}', which does
    not build); a missing 'until:' named no judge; an empty parallel branch did not say how to keep the ranking."""
    f = tmp_path / "p.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError) as e:
        Pipeline.from_yaml(f)
    assert str(e.value) == f"{f}: {message}"


def test_every_kinds_example_builds():
    """The example each hint shows for a judge, a router and a fuser loads in its place; so does the top_k branch
    suggested for keeping the incoming ranking in a parallel."""
    from ragkit.pipelines.yaml import _kind_example, build, load_yaml

    judge, router, fuser = (_kind_example(kind) for kind in ("judge", "router", "fuser"))
    load_yaml(f"pipeline: [bm25: {{}}, loop: {{body: [prf: {{}}, bm25: {{}}], until: {{{judge}}}}}]")
    labels = build(yaml.safe_load(f"{{{router}}}"), "x").possible_labels()
    load_yaml(f"pipeline: [bm25: {{}}, route: {{router: {{{router}}}, branches: {{{labels[0]}: [], "
              f"{labels[-1]}: [top_k: {{k: 5}}]}}}}]")
    load_yaml(f"pipeline: [parallel: {{branches: [bm25: {{}}, bm25: {{variant: okapi}}], fuse: {{{fuser}}}}}]")
    load_yaml("pipeline: [bm25: {}, parallel: {branches: [top_k: {k: 100}, dense: {}]}]")
