"""Input errors said early and plainly: a pipeline's ``dense.reduce: pca:<dims>`` on too small a corpus refused
before any step encodes; ``reduce`` refused as what it takes (not its regular expression), read
case-insensitively; the command line's ranged options naming the value given; ``Pipeline.from_yaml`` (and
``load_yaml``, ``validate_file``) of something that is no path, text or mapping."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import HashedEncoder, word_corpus

from ragkit.encoders import register_encoder
from ragkit.errors import ConfigError, InputTypeError, ParamError
from ragkit.pipelines import Parallel, Pipeline, load_yaml, validate_file
from ragkit.retrievers import Dense


class _CountingEncoder(HashedEncoder):
    """A :class:`HashedEncoder` that counts the texts it was asked to encode."""

    def __init__(self, key: str, dim: int) -> None:
        super().__init__(key, dim)
        self.encoded = 0

    def encode(self, texts, **kw):  # noqa: ANN001, ANN003, ANN201
        self.encoded += len(texts)
        return super().encode(texts, **kw)

    encode_queries = encode


_ENC = _CountingEncoder("early-errors-counting-v1", 64)
register_encoder("early-errors-counting", _ENC, replace=True)


# ------------------------------------------------------------------ 1. dense reduce refused before any encoding


@pytest.mark.parametrize("shape", ["branch", "nested"])
def test_a_pca_wider_than_the_corpus_is_refused_before_any_step_encodes(shape):
    """Old code: branch[0]'s Dense encoded the 40 texts, then branch[1] refused ``pca:50`` on 40 documents."""
    c = word_corpus(40)
    first, second = Dense(model="early-errors-counting"), Dense(model="early-errors-counting", reduce="pca:50")
    pipe = (Pipeline([Parallel([first, second])]) if shape == "branch"
            else Pipeline([Parallel([first, Pipeline([second])])]))
    _ENC.encoded = 0
    with pytest.raises(ParamError, match=r"parallel.*branches\[1\].*dense\.reduce: 'pca:50' fits 50 principal "
                                         r"components on the corpus, which has 40 documents") as e:
        pipe.fit(c)
    assert _ENC.encoded == 0
    assert e.value.path.endswith("dense.reduce") and "branches[1]" in e.value.path
    assert not first.is_fitted


def test_a_pca_fitting_the_corpus_still_fits_and_a_lone_dense_still_refuses():
    c = word_corpus(40)
    Pipeline([Parallel([Dense(model="early-errors-counting"),
                        Dense(model="early-errors-counting", reduce="pca:39")])]).fit(c)
    with pytest.raises(ParamError, match=r"^dense\.reduce: 'pca:40' fits 40 principal components"):
        Dense(model="early-errors-counting", reduce="pca:40").fit(c)


# ------------------------------------------------------------------ 2. reduce's message and spelling

_REDUCE_WANTED = "expected 'none', 'pca:<dims>' or 'matryoshka:<dims>' with dims >= 1, got "


@pytest.mark.parametrize("value", ["pca:0", "matryoshka:-1", "pca", "svd:64", 1000, None, "pca:6 4"])
def test_a_bad_reduce_says_what_reduce_takes(value):
    """Old code: ``expected a string matching '^(none|(pca|matryoshka):[1-9][0-9]*)$'`` (``1000``: ``expected a
    string``)."""
    with pytest.raises(ParamError) as e:
        Dense(reduce=value)
    assert str(e.value) == f"dense.reduce: {_REDUCE_WANTED}{value!r}"
    assert "[1-9]" not in str(e.value) and e.value.path == "dense.reduce"


def test_a_bad_reduce_in_yaml_names_the_file_line_and_path(tmp_path: Path):
    f = tmp_path / "p.yaml"
    f.write_text("pipeline:\n  - bm25: {}\n  - dense:\n      reduce: pca:0\n", encoding="utf-8")
    with pytest.raises(ConfigError) as e:
        Pipeline.from_yaml(f)
    assert str(e.value) == f"{f}: line 4: pipeline[1].dense.reduce: {_REDUCE_WANTED}'pca:0'"


@pytest.mark.parametrize("value, read", [("PCA:64", "pca:64"), (" Matryoshka:32 ", "matryoshka:32"),
                                         ("NONE", "none")])
def test_reduce_is_read_case_insensitively_and_written_lower_case(value, read):
    """Old code: ``PCA:64`` was refused (as dtype: F16 is read as f16)."""
    d = Dense(reduce=value)
    assert d.params.reduce == read
    again = Pipeline.from_yaml(Pipeline([d]).to_yaml())
    assert again.steps[0].params.reduce == read


# ------------------------------------------------------------------ 3. the CLI's ranged options


@pytest.mark.parametrize("args, option, wanted, given", [
    (["eval", "--data", "x", "-p", "bm25", "--limit", "-3"], "--limit", "an integer >= 1", "-3"),
    (["eval", "--data", "x", "-p", "bm25", "--limit", "abc"], "--limit", "an integer >= 1", "abc"),
    (["eval", "--data", "x", "-p", "bm25", "--depth", "0"], "--depth", "an integer from 1 to 2,147,483,646", "0"),
    (["eval", "--data", "x", "-p", "bm25", "--relevance-level", "0"], "--relevance-level", "an integer >= 1", "0"),
    (["search", "--index", "x", "--k", "0", "q"], "--k", "an integer from 1 to 2,147,483,647", "0"),
    (["ask", "q", "-p", "bm25", "--top-k", "0"], "--top-k", "an integer from 1 to 2,147,483,647", "0"),
    (["ask", "q", "-p", "bm25", "--max-new-tokens", "1.5"], "--max-new-tokens",
     "an integer from 1 to 2,147,483,647", "1.5"),
    (["train", "--data", "x", "-p", "bm25", "-o", "out", "--seed", "-1"], "--seed",
     "an integer from 0 to 4,294,967,295", "-1"),
    (["compare", "a.json", "b.json", "--resamples", "0"], "--resamples", "an integer from 1 to 10,000,000", "0"),
    (["compare", "a.json", "b.json", "--seed", "4294967296"], "--seed", "an integer from 0 to 4,294,967,295",
     "4294967296"),
    (["compare", "a.json", "b.json", "--alpha", "2"], "--alpha", "a number strictly between 0 and 1", "2"),
    (["compare", "a.json", "b.json", "--alpha", "nan"], "--alpha", "a number strictly between 0 and 1", "nan"),
    (["compare", "a.json", "b.json", "--relevance-level", "0"], "--relevance-level", "an integer >= 1", "0"),
])
def test_a_ranged_option_out_of_range_names_the_option_range_and_value(args, option, wanted, given, capsys,
                                                                         tmp_path, monkeypatch):
    """Old code: ``Invalid value for '--limit': Input should be greater than or equal to 1`` (no value; ``abc``:
    ``unable to parse string as an integer``); ``--alpha nan`` was taken."""
    from ragkit.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"'{option}': expected {wanted}, got {given!r}" in err, err
    assert "Input should" not in err and len(err.strip().splitlines()) == 1


def test_ranged_options_in_range_are_taken():
    """The parser hands the command numbers (a default, given as a number, as it is)."""
    from ragkit.cli._options import _range_parser

    parse = _range_parser("--alpha", float, 0.0, 1.0)
    assert parse("0.5") == 0.5 and parse(0.05) == 0.05 and parse(None) is None and parse("1") == 1.0
    assert _range_parser("--limit", int, 1, None)(" 7 ") == 7
    assert _range_parser("--seed", int, 0, 2**32 - 1)(0) == 0


# ------------------------------------------------------------------ 4. from_yaml of no path


@pytest.mark.parametrize("value", [5, None, b"pipeline: []", 1.5])
def test_from_yaml_of_no_path_text_or_mapping_is_an_input_type_error(value):
    """Old code: pathlib's ``TypeError: expected str, bytes or os.PathLike object, not int``."""
    with pytest.raises(InputTypeError, match=r"^Pipeline\.from_yaml: source: expected a YAML file path \(a str or "
                                             r"pathlib\.Path\), YAML text or a parsed mapping, got "
                                             f"{type(value).__name__} "):
        Pipeline.from_yaml(value)
    with pytest.raises(InputTypeError, match=r"^load_yaml: source: expected a YAML file path"):
        load_yaml(value)
    with pytest.raises(InputTypeError, match=r"^validate_file: path: expected a YAML file path \(a str or "
                                             r"pathlib\.Path\), got "):
        validate_file(value)


def test_from_yaml_still_takes_a_path_text_and_mapping(tmp_path: Path):
    f = tmp_path / "p.yaml"
    f.write_text("pipeline:\n  - bm25: {k: 5}\n", encoding="utf-8")
    for source in (f, str(f), "pipeline:\n  - bm25: {k: 5}\n", {"pipeline": [{"bm25": {"k": 5}}]}):
        assert Pipeline.from_yaml(source).steps[0].params.k == 5
