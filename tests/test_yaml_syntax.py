"""Pipeline YAML read as its author means it: YAML 1.2 numbers (no 1.1 octal or base-60 values), one
merge key per mapping, a whole message for a file of two documents, ``x-`` keys that hold anchors."""

from __future__ import annotations

import pytest

from ragkit import Pipeline
from ragkit.errors import ConfigError


def _k(text: str) -> int:
    (top,) = Pipeline.from_yaml(text).steps
    return top.params.k


def test_numbers_read_as_yaml_1_2():
    """``k: 010`` was 8 (YAML 1.1 octal) and ``threshold: 1:30`` 90.0 (base 60), silently."""
    assert _k("pipeline:\n  - top_k: {k: 010}\n") == 10
    assert _k("pipeline:\n  - top_k: {k: 1e3}\n") == 1000
    assert _k("pipeline:\n  - top_k: {k: 0x10}\n") == 16
    with pytest.raises(ConfigError, match=r"threshold.*1:30"):
        Pipeline.from_yaml("pipeline:\n  - bm25: {}\n  - score_threshold: {threshold: 1:30}\n")
    (_, thr) = Pipeline.from_yaml("pipeline:\n  - bm25: {}\n  - score_threshold: {threshold: 1e-3}\n").steps
    assert thr.params.threshold == 0.001


def test_a_second_merge_key_in_one_mapping_is_refused():
    """``{<<: *a, <<: {k: 70}}`` kept one of the two silently (k was 50)."""
    text = "x-a: &a {k: 50}\npipeline:\n  - bm25: {<<: *a, <<: {k: 70}}\n"
    with pytest.raises(ConfigError, match=r"line 3.*'<<' \(a merge key\) appears twice.*<<: \[\*a, \*b\]"):
        Pipeline.from_yaml(text)
    both = "x-a: &a {k: 50}\nx-b: &b {b: 0.5}\npipeline:\n  - bm25: {<<: [*a, *b]}\n"
    (bm,) = Pipeline.from_yaml(both).steps
    assert (bm.params.k, bm.params.b) == (50, 0.5)


def test_x_keys_hold_anchors_and_other_top_level_keys_are_refused():
    (bm,) = Pipeline.from_yaml("x-defaults: &d {k: 7}\npipeline:\n  - bm25: *d\n").steps
    assert bm.params.k == 7
    with pytest.raises(ConfigError, match=r"defaults: unknown top-level key.*an 'x-' key of your own"):
        Pipeline.from_yaml("defaults: &d {k: 7}\npipeline:\n  - bm25: *d\n")


def test_two_documents_in_one_file_are_named_whole():
    """The message was 'not valid pipeline YAML: but found another document' (PyYAML's context lost)."""
    with pytest.raises(ConfigError, match="expected a single document in the stream, but found another document"):
        Pipeline.from_yaml("pipeline:\n  - bm25: {}\n---\npipeline:\n  - bm25: {}\n")


def test_a_scalar_for_nested_settings_is_explained():
    """pydantic's 'Input should be a valid dictionary or instance of AdaptConfig' was the message."""
    with pytest.raises(ConfigError, match=r"pipeline\[0\]\.dense\.adapt: expected a mapping of adapt's settings "
                                          r"\(e\.g\. adapt: \{\} for the defaults\), got True"):
        Pipeline.from_yaml("pipeline:\n  - dense: {adapt: true}\n")
    with pytest.raises(ConfigError, match=r"rules\[0\]: expected a mapping of settings \(a Rule\), got 'short'"):
        Pipeline.from_yaml("pipeline:\n  - bm25: {}\n  - route: {router: {rule_router: {rules: [short]}}, "
                           "branches: {a: []}}\n")
