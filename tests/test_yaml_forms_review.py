"""Pipeline YAML forms, review: a line indented to no level of the lines above it is told, in plain words,
what it should line up with; every loop's iteration counts and every route's labels stay readable under the
node's path (a later loop or route wrote over them); a step mapping's keys are listed as written; a loop's
``max_iters`` reads a quoted number as an operator's integer parameter does."""

from __future__ import annotations

import pytest

from ragkit import Corpus, Operator, Pipeline
from ragkit.errors import ConfigError
from ragkit.pipelines import Loop, MaxOnly, Route
from ragkit.pipelines.routers import RuleRouter
from ragkit.pipelines.yaml import load_yaml
from ragkit.retrievers import BM25
from ragkit.types import State


def _error(text: str) -> str:
    with pytest.raises(ConfigError) as e:
        load_yaml(text)
    return str(e.value)


# ---------------------------------------------------------------- indentation mistakes the parser stops at

MISALIGNED = [
    # a loop's until: at the column of its body's '- ' items
    ("pipeline:\n  - loop:\n      body:\n        - prf: {fb_docs: 5}\n        - bm25: {k: 50}\n        until:\n"
     "          topk_stable: {k: 5}\n      max_iters: 3\n",
     "<text>: line 6, column 9: not valid pipeline YAML: 'until:' lines up with the '- ' of the items of the list "
     "that starts at line 4, column 9 ('- prf:') but is not one of them (it has no '- '), nor does it line up with "
     "the keys of the mapping around that list: 'until' is a key of loop, like 'body': line it up with 'body:' "
     "(line 3, column 7)"),
    # the same with a parallel's fuse:
    ("pipeline:\n  - parallel:\n      branches:\n        - bm25: {k: 40}\n        - dense: {k: 40}\n"
     "        fuse: {rrf: {}}\n",
     "<text>: line 6, column 9: not valid pipeline YAML: 'fuse:' lines up with the '- ' of the items of the list "
     "that starts at line 4, column 9 ('- bm25:') but is not one of them (it has no '- '), nor does it line up with "
     "the keys of the mapping around that list: 'fuse' is a key of parallel, like 'branches': line it up with "
     "'branches:' (line 3, column 7)"),
    # fuse: one column short of branches:
    ("pipeline:\n  - parallel:\n      branches:\n      - bm25: {k: 40}\n      - dense: {k: 40}\n"
     "     fuse: {rrf: {}}\n",
     "<text>: line 6, column 6: not valid pipeline YAML: 'fuse:' at column 6 lines up with no mapping above it: it "
     "is deeper than the keys of the mapping that starts at line 2, column 5 ('parallel:') and not as deep as "
     "'branches:' (line 3, column 7): 'fuse' is a key of parallel, like 'branches': line it up with 'branches:' "
     "(line 3, column 7)"),
    # a route label one column short of the other label
    ("pipeline:\n  - route:\n      router:\n        rule_router: {rules: [{label: a, max_words: 8}], default: b}\n"
     "      branches:\n        a: [bm25: {}]\n       b: [dense: {}]\n",
     "<text>: line 7, column 8: not valid pipeline YAML: 'b:' at column 8 lines up with no mapping above it: it is "
     "deeper than the keys of the mapping that starts at line 3, column 7 ('router:') and not as deep as 'a:' "
     "(line 6, column 9): the keys of one mapping line up in one column: line it up with the key it belongs "
     "beside, 'a:' (line 6, column 9) or 'branches:' (line 5, column 7)"),
    # a step indented under the step before it
    ("pipeline:\n- bm25: {k: 10}\n  - top_k: {k: 5}\n",
     "<text>: line 3, column 3: not valid pipeline YAML: '- top_k:' is a list item, indented to column 3 inside the "
     "mapping that starts at line 2, column 3 ('bm25:'), where that mapping's next key or its end is expected: a "
     "step '- x' lines up with the other steps of its list: put its '-' at column 1, like '- bm25:' at line 2, "
     "column 1"),
    # a loop's first key indented less than 'loop:' but more than its '- '
    ("pipeline:\n  - loop:\n   body:\n        - bm25: {k: 50}\n",
     "<text>: line 3, column 4: not valid pipeline YAML: 'body:' at column 4 lines up with no mapping above it: it "
     "is deeper than the items of the list that starts at line 2, column 3 ('- loop:') and not as deep as 'loop:' "
     "(line 2, column 5): 'body' is a key of loop: indent it under 'loop:' (line 2, column 5), deeper than it"),
    # a step one column deeper than the steps above it
    ("pipeline:\n  - loop:\n      body:\n        - prf: {fb_docs: 5}\n         - bm25: {k: 50}\n",
     "<text>: line 5, column 10: not valid pipeline YAML: '- bm25:' is a list item, indented to column 10 inside "
     "the list that starts at line 4, column 9 ('- prf:'), where its next item or its end is expected: a step "
     "'- x' lines up with the other steps of its list: put its '-' at column 9, like '- prf:' at line 4, column 9"),
]


@pytest.mark.parametrize("text, message", MISALIGNED, ids=range(len(MISALIGNED)))
def test_a_misaligned_line_is_told_what_to_line_up_with(text, message):
    """These were PyYAML's own words only: 'expected <block end>, but found '?'' (or '<block mapping start>',
    or '-'), with the line where the parser stopped and nothing of the list or mapping it broke off."""
    got = _error(text)
    assert got == message
    assert "block end" not in got


def test_a_misaligned_line_in_a_file_names_the_file(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text(MISALIGNED[0][0])
    assert _error(str(f)) == MISALIGNED[0][1].replace("<text>", str(f))


@pytest.mark.parametrize("text, hint", [
    ("pipeline:\n  - loop:\n      body:\n        - prf: {fb_docs: 5}\n        - bm25: {k: 50}\n          until:\n"
     "            topk_stable: {k: 5}\n      max_iters: 3\n", "until is a key of loop, not of bm25: dedent it to the "
                                                              "level of 'body:'"),
    ("pipeline:\n  - parallel:\n      branches:\n        - bm25: {k: 40}\n        - dense: {k: 40}\n          fuse:\n"
     "            rrf: {k: 60}\n", "fuse is a key of parallel, not of dense: dedent it to the level of 'branches:'"),
    ("pipeline:\n  - loop:\n      body:\n        - bm25: {k: 50}\n      until:\n        max_only: {}\n"
     "    max_iters: 3\n", "max_iters is a key of loop: indent it under 'loop:'"),
])
def test_the_hints_for_a_key_nested_one_level_off_are_kept(text, hint):
    """A key indented one whole level too deep or too shallow parses: its hint comes from the builder, as before."""
    assert hint in _error(text)


def test_other_syntax_errors_keep_their_words():
    assert _error("pipeline:\n  - loop:\n      body: [prf: {fb_docs: 5, bm25: {k: 10}]\n").endswith(
        "the '{' at line 3, column 19 is not closed (is '}' missing?)")
    assert _error("pipeline:\n  - loop:\n      body:\n\t- bm25: {k: 10}\n").endswith(
        "indent with spaces: YAML does not allow tabs")


# ---------------------------------------------------------------- a step mapping's keys as written


def test_a_step_mapping_lists_its_keys_as_written():
    got = _error("pipeline:\n  - loop:\n      body:\n        prf: {}\n        bm25: {}\n      until: {max_only: {}}\n")
    assert "expected exactly one operator key, got 2: ['prf', 'bm25']" in got


# ---------------------------------------------------------------- max_iters as an operator's integer


@pytest.mark.parametrize("written, n", [('"3"', 3), ("3.0", 3), ("' 2 '", 2), ("7", 7)])
def test_max_iters_reads_a_quoted_or_integral_number(written, n):
    """A quoted number was refused in max_iters while every operator's integer parameter (dense k: "10") takes it."""
    pipe = load_yaml(f"pipeline: [loop: {{body: [bm25: {{}}], until: {{max_only: {{}}}}, max_iters: {written}}}]")
    assert pipe.steps[0].max_iters == n and type(pipe.steps[0].max_iters) is int
    assert f"max_iters: {n}\n" in pipe.to_yaml()


@pytest.mark.parametrize("written, shown", [('"0"', "'0'"), ("1001", "1001"), ("3.5", "3.5"), ("true", "True"),
                                            ('"x"', "'x'"), ("null", "None"), ("[3]", "[3]")])
def test_max_iters_still_refuses_what_is_no_integer_in_range(written, shown):
    got = _error(f"pipeline: [loop: {{body: [bm25: {{}}], until: {{max_only: {{}}}}, max_iters: {written}}}]")
    assert f"pipeline[0].loop.max_iters: expected an integer from 1 to 1,000 (each iteration runs the body over the " \
           f"queries still looping), got {shown}" in got


# ---------------------------------------------------------------- every loop's and route's record

CORPUS = ["red apples", "green pears", "red cars", "blue sky", "green apples"]
QUERIES = ["red", "green apples are nice fruit"]


def _search(text: str, queries=QUERIES, **kw):
    return load_yaml(text).fit(Corpus.from_texts(CORPUS)).search(queries, **kw)


def test_two_loops_keep_both_counts():
    run = _search("pipeline:\n"
                  "  - loop: {body: [bm25: {k: 3}], until: {max_only: {}}, max_iters: 2}\n"
                  "  - loop: {body: [top_k: {k: 2}], until: {max_only: {}}, max_iters: 3}\n")
    assert run.values["iterations@pipeline[0].loop"] == [2, 2]
    assert run.values["iterations@pipeline[1].loop"] == [3, 3]
    assert run.values["iterations"] == [3, 3]  # the last loop's, as before
    from ragkit.pipelines._compose import record_key

    assert record_key("iterations", "pipeline[0].loop") == "iterations@pipeline[0].loop"


ROUTES = """
pipeline:
  - bm25: {k: 3}
  - route:
      router: {rule_router: {rules: [{label: short, max_words: 1}], default: long}}
      branches: {short: [top_k: {k: 1}], long: []}
  - route:
      router: {rule_router: {rules: [{label: a, max_words: 3}], default: b}}
      branches: {a: [], b: [top_k: {k: 2}]}
"""


def test_two_routes_keep_both_label_lists():
    run = _search(ROUTES)
    assert run.values["route@pipeline[1].route"] == ["short", "long"]
    assert run.values["route@pipeline[2].route"] == ["a", "b"]
    assert run.values["route"] == ["a", "b"]  # the last route's, as before


def test_a_loop_inside_a_parallel_branch_keeps_its_counts_under_its_path():
    """Before, a branch's loop wrote 'iterations' only where no step before the parallel had (first branch wins):
    after an earlier loop its counts were in the trace only."""
    run = _search("pipeline:\n"
                  "  - loop: {body: [bm25: {k: 3}], until: {max_only: {}}, max_iters: 1}\n"
                  "  - parallel:\n"
                  "      branches:\n"
                  "        - - top_k: {k: 3}\n"
                  "          - loop: {body: [top_k: {k: 2}], until: {max_only: {}}, max_iters: 2}\n"
                  "        - top_k: {k: 1}\n"
                  "      fuse: {rrf: {}}\n", trace=True)
    at = "pipeline[1].parallel.branches[0][1].loop"
    assert run.values[f"iterations@{at}"] == [2, 2]
    assert run.values["iterations@pipeline[0].loop"] == [1, 1]
    assert at in {e.path for e in run.trace}  # the same spelling as the trace's


def test_a_route_inside_a_loop_and_a_loop_in_one_of_its_branches():
    """A loop in a branch that only some queries take: None for the others; a parallel in a loop body takes the
    latest iteration's record of a loop in its branch, not the first one's."""
    run = _search("""
pipeline:
  - bm25: {k: 3}
  - loop:
      body:
        - route:
            router: {rule_router: {rules: [{label: short, max_words: 1}], default: long}}
            branches:
              short: [top_k: {k: 1}]
              long: [loop: {body: [top_k: {k: 2}], until: {max_only: {}}, max_iters: 2}]
      until: {max_only: {}}
      max_iters: 3
""")
    assert run.values["route@pipeline[1].loop.body[0].route"] == ["short", "long"]
    assert run.values["iterations@pipeline[1].loop.body[0].route.branches.long[0].loop"] == [None, 2]
    assert run.values["iterations@pipeline[1].loop"] == [3, 3]


def test_a_parallel_in_a_loop_keeps_the_latest_record_of_its_branchs_route():
    """A parallel in a loop body: its branch's route labels the queries on BM25 scores in the first iteration (above
    the threshold: easy) and on the fused RRF scores in the second (below it: hard); the record is the latest one.
    Before, the first branch's values won over the second's and over the state's, so a later one was lost."""
    run = _search("""
pipeline:
  - bm25: {k: 5}
  - loop:
      body:
        - parallel:
            branches:
              - top_k: {k: 5}
              - route:
                  router: {score_router: {feature: top1, threshold: 0.2}}
                  branches: {easy: [top_k: {k: 3}], hard: []}
            fuse: {rrf: {}}
      until: {max_only: {}}
      max_iters: 2
""", queries=["red apples", "green apples"])
    assert run.values["route@pipeline[1].loop.body[0].parallel.branches[1].route"] == ["hard", "hard"]


def test_a_composite_searched_on_its_own_keeps_its_record_at_its_kind():
    corpus = Corpus.from_texts(CORPUS)
    loop = Loop(BM25(k=3), until=MaxOnly(), max_iters=2).fit(corpus)
    assert loop(State.of(QUERIES)).values["iterations@loop"] == [2, 2]
    route = Route(RuleRouter(rules=[{"label": "a", "max_words": 1}], default="b"), {"a": BM25(k=1), "b": BM25(k=2)})
    assert route.fit(corpus)(State.of(QUERIES)).values["route@route"] == ["a", "b"]


def test_saved_pipelines_and_their_yaml_are_unchanged(tmp_path):
    pipe = load_yaml(ROUTES).fit(Corpus.from_texts(CORPUS))
    assert "@" not in pipe.to_yaml()
    pipe.save(tmp_path / "p")
    again = Operator.load(tmp_path / "p")
    assert isinstance(again, Pipeline) and again.to_yaml() == pipe.to_yaml()
    assert again.search(QUERIES).values == pipe.search(QUERIES).values


def test_line_parts_reads_keys_with_spaces_before_the_colon_and_long_lines():
    """The key pattern is greedy up to the one ':' a key can reach (a lazy one rescanned a run of spaces at every
    step: 11.7 s for a line of 100,000); keys read as before."""
    from ragkit.pipelines.yaml import _line_parts

    assert _line_parts("  - bm25:") == (2, [2], (4, "bm25"))
    assert _line_parts("key   :") == (0, [], (0, "key"))
    assert _line_parts("  'a b' : x") == (2, [], (2, "a b"))
    assert _line_parts("a: b: c") == (0, [], (0, "a"))
    assert _line_parts("- x" + " " * 100_000 + "y") == (0, [0], None)
    assert _line_parts("- x" + " " * 100_000 + ":")[2] == (2, "x")


def test_a_loop_in_a_branch_after_another_loop_writes_the_plain_record():
    """``values["iterations"]`` is the last loop's: a parallel kept the earlier loop's value over its branch's
    (setdefault), while the path records were right."""
    from conftest import word_corpus

    from ragkit.pipelines import load_yaml

    pipe = load_yaml("""
pipeline:
  - loop: {body: [bm25: {k: 5}], until: {max_only: {}}, max_iters: 1}
  - parallel:
      branches:
        - [loop: {body: [prf: {}, bm25: {k: 5}], until: {max_only: {}}, max_iters: 3}]
        - [bm25: {k: 5}]
      fuse: {rrf: {}}
""").fit(word_corpus(40))
    values = pipe(__import__("ragkit").State.of(["w1 w2", "w3"])).values
    inner = values["iterations@pipeline[1].parallel.branches[0][0].loop"]
    assert values["iterations@pipeline[0].loop"] == [1, 1] and inner == [3, 3]
    assert values["iterations"] == inner


def test_a_branch_writing_its_record_as_an_array_and_a_fit_override_of_ones_own():
    """A plugin step writing ``values["iterations"]`` as a numpy array inside a branch crashed the parallel's merge
    (the truth value of an array); a Pipeline subclass overriding ``fit`` was skipped when nested (``_fit_at``)."""
    import numpy as np
    from conftest import word_corpus

    from ragkit import Operator, Params, State
    from ragkit.pipelines import Parallel, Pipeline
    from ragkit.retrievers import BM25

    class NoParams(Params):
        pass

    class Counts(Operator):
        name, kind, Params, stateless, reads_rankings = "tyf_counts", "filter", NoParams, True, True
        params: NoParams

        def _call(self, state: State) -> State:
            out = state.copy()
            out.values["iterations"] = np.ones(len(state), dtype=np.int64)
            return out

    corpus = word_corpus(30)
    par = Parallel([Pipeline([BM25(k=3), Counts()]), BM25(k=3)]).fit(corpus)
    assert list(par(State.of(["w1 w2", "w3"])).values["iterations"]) == [1, 1]

    calls: list[int] = []

    class Logged(Pipeline):
        def fit(self, corpus, train=None, *, upstream=None, backend="local"):  # type: ignore[no-untyped-def]
            calls.append(len(corpus))
            return super().fit(corpus, train, upstream=upstream, backend=backend)

    Pipeline([Logged([BM25(k=3)])]).fit(corpus)
    assert calls == [len(corpus)]
