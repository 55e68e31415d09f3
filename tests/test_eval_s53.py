"""BEIR file reading and evaluation: read_corpus's duplicate-id check per block walks the new ids only, not every
id seen so far; escaped non-BMP characters keep a block on the fast path; a qrels header under a blank line;
nDCG's linear gain; checked qrels not scanned for NULs again."""

from __future__ import annotations

import json
import math

import pytest

from ragkit.errors import DataError
from ragkit.eval import _lines, _read, read_corpus, read_qrels, read_queries


class _CountingDict(dict):
    """A dict counting the keys iterated over (``__iter__``: what ``set.isdisjoint(a dict)`` walks)."""

    walked = 0

    def __iter__(self):
        type(self).walked += len(self)
        return super().__iter__()


def test_a_corpus_block_checks_its_ids_against_the_seen_ones_without_walking_them():
    """``first.keys().isdisjoint(seen)`` iterated all of ``seen`` (a dict, not a view) for every block: quadratic
    in the corpus (1M short documents 20.6 s -> 14.7 s; a corpus read line by line, one record per block, 16.7 s ->
    1.7 s for 20,000 documents).  A block of one record against 100,000 ids seen walks none of them."""
    seen = _CountingDict((f"d{i}", i + 1) for i in range(100_000))
    into: tuple[list, list, list, list] = ([], [], [], [])
    _CountingDict.walked = 0
    assert _read._corpus_block(range(100_001, 100_002), [{"_id": "new", "text": "x"}], seen, into)
    assert _CountingDict.walked == 0
    assert into[0] == ["new"] and seen["new"] == 100_001
    # a repeated id is still found (the block is left to the record-by-record path)
    assert not _read._corpus_block(range(100_002, 100_003), [{"_id": "d5", "text": "x"}], seen, into)
    assert _CountingDict.walked == 0


def _count_line_reads(monkeypatch) -> list[int]:
    """Patch :func:`ragkit.eval._lines._jsonl_line` (the line-by-line path) to count its calls."""
    calls: list[int] = []
    original = _lines._jsonl_line

    def counted(path, n, raw, first, **kw):
        calls.append(n)
        return original(path, n, raw, first, **kw)

    monkeypatch.setattr(_lines, "_jsonl_line", counted)
    return calls


def test_a_block_with_escaped_emoji_is_parsed_at_once(tmp_path, monkeypatch):
    """Any \\ud800-\\udfff escape sent the whole block line by line (~10x slower), though a pair, an emoji as
    json.dumps writes it, is one character: only a lone surrogate escape does now."""
    calls = _count_line_reads(monkeypatch)
    p = tmp_path / "corpus.jsonl"
    texts = ["plain", "emoji \U0001F600 x", "upper", "two \U0001F600\U0001F680", "meta"]
    recs = [{"_id": f"d{i}", "title": "", "text": t} for i, t in enumerate(texts)]
    recs[4]["metadata"] = {"tags": ["\U0001F600"]}
    lines = [json.dumps(r) for r in recs]  # (ensure_ascii: "\ud83d\ude00")
    lines[2] = '{"_id": "d2", "title": "", "text": "upper \\uD83D\\uDE00 mixed \\ud83d\\uDE00"}'
    assert "\\ud83d\\ude00" in lines[1]
    p.write_text("\n".join(lines) + "\n")
    corpus = read_corpus(p)
    assert calls == []
    assert corpus.texts.tolist() == [json.loads(x)["text"] for x in lines]
    assert corpus.texts[2] == "upper \U0001F600 mixed \U0001F600"
    assert corpus.metadata["tags"][4] == ["\U0001F600"]


@pytest.mark.parametrize("text", ["C:\\\U0001F600", "\\\\\U0001F600", "a\\\U0001F600\\\\\U0001F680"])
def test_an_emoji_after_a_backslash_is_parsed_at_once(tmp_path, monkeypatch, text):
    """A backslash right before an emoji (the text 'C:' backslash emoji, which json.dumps writes as an escaped
    backslash and then a pair) sent its block line by line, a pair after a backslash being taken for a lone
    surrogate: escaped backslashes are blanked out before the pairs are looked for."""
    calls = _count_line_reads(monkeypatch)
    p = tmp_path / "corpus.jsonl"
    line = json.dumps({"_id": "d0", "text": text})
    assert "\\\\\\ud83d\\ude00" in line
    # (\u005c, a backslash written as an escape: the 'ud800' after it is text, and a pair after it a pair)
    p.write_text(line + '\n{"_id": "d1", "text": "\\u005cud800 \\u005c\\ud83d\\ude00"}\n')
    assert read_corpus(p).texts.tolist() == [text, "\\ud800 \\\U0001F600"]
    assert calls == []


def test_an_emoji_record_read_line_by_line_is_not_walked(tmp_path, monkeypatch):
    """On the line-by-line path (a blank line in the block), a record was walked for a lone surrogate wherever its
    line showed any surrogate escape, a pair (an emoji) too: only a lone one is walked now."""
    walked: list[int] = []
    original = _lines._check_no_lone_surrogate

    def counted(rec, path, n):
        walked.append(n)
        return original(rec, path, n)

    monkeypatch.setattr(_lines, "_check_no_lone_surrogate", counted)
    calls = _count_line_reads(monkeypatch)
    p = tmp_path / "corpus.jsonl"
    rec = {"_id": "d1", "text": "emoji \U0001F600", "metadata": {"tags": ["\U0001F680"]}}
    p.write_text(json.dumps(rec) + "\n\n" + json.dumps({"_id": "d2", "text": "x \ud800"}) + "\n")
    with pytest.raises(DataError, match=r"corpus\.jsonl:3: field 'text' holds an unpaired surrogate escape"):
        read_corpus(p)
    assert calls == [1, 2, 3] and walked == [3]


@pytest.mark.parametrize("text, where", [
    ('"\\ud800"', "at character 1"),  # a lone high surrogate escape
    ('"\\udc00 x"', "at character 1"),  # a lone low one
    ('"\\ud83d\\ud83d\\ude00"', "at character 1"),  # a high one before a pair
    ('"\\ud83d\\ude00\\ude00"', "at character 2"),  # a low one after a pair
    ('"\\ud83d x \\ude00"', "at character 1"),  # the two halves apart
    ('"\\\\ud83d\\ude00"', "at character 7"),  # an escaped backslash, "ud83d", then a lone low surrogate escape
    ('"a\\\\\\\\\\udbff"', "at character 4"),  # two escaped backslashes, then a lone high surrogate escape
    ('"\\u005c\\ud800"', "at character 2"),  # a backslash written as an escape, then a lone surrogate escape
])
def test_a_lone_surrogate_escape_still_sends_its_block_line_by_line(tmp_path, monkeypatch, text, where):
    """The lone ones are refused at their line as before, the emoji beside them in the block or not; an escaped
    backslash before 'ud83d' is no escape, so the low half after it is lone (a regular expression that takes
    '\\ud83d\\ude00' for a pair wherever it stands would let it into the corpus)."""
    calls = _count_line_reads(monkeypatch)
    p = tmp_path / "corpus.jsonl"
    p.write_text(json.dumps({"_id": "d0", "text": "ok \U0001F600"}) + "\n"
                 + f'{{"_id": "d1", "text": {text}}}\n')
    with pytest.raises(DataError, match=rf"corpus\.jsonl:2: field 'text' holds an unpaired surrogate escape "
                                        rf"\(\\u[0-9a-f]{{4}} {where}\)"):
        read_corpus(p)
    assert calls == [1, 2]


@pytest.mark.parametrize("text", ['"\\\\ud800"', '"\\\\\\ud83d\\ude00"', '"\\\\u00e9"'])
def test_text_that_only_looks_like_a_surrogate_escape_is_read(tmp_path, text):
    """An escaped backslash before 'ud800' (no escape), or before a pair: the text, read line by line or not."""
    p = tmp_path / "corpus.jsonl"
    p.write_text(f'{{"_id": "d1", "text": {text}}}\n')
    assert read_corpus(p).texts.tolist() == [json.loads(text)]


@pytest.mark.parametrize("meta, said", [
    ({"author": "\ud800"}, r"field 'metadata' holds an unpaired surrogate escape at \['author'\] \(\\ud800 at "
                           r"character 1\)"),
    ({"tags": ["ok", "x\udfff"]}, r"field 'metadata' holds an unpaired surrogate escape at \['tags'\]\[1\] "
                                  r"\(\\udfff at character 2\)"),
    ({"a": {"b\udc00": 1}}, r"field 'metadata' holds an unpaired surrogate escape in a key, at \['a'\]\['b\\udc00'\] "
                            r"\(\\udc00 at character 2 of the key\)"),
])
def test_a_lone_surrogate_in_nested_values_is_refused(tmp_path, meta, said):
    """A lone surrogate in metadata was refused by Corpus, without file:line ("Corpus metadata field 'author' of
    document 'd1' (row 0) holds a lone surrogate"); now named at its line, and where it stands in the metadata."""
    p = tmp_path / "corpus.jsonl"
    p.write_text(json.dumps({"_id": "d0", "text": "ok"}) + "\n"
                 + json.dumps({"_id": "d1", "text": "x", "metadata": meta}) + "\n")
    with pytest.raises(DataError, match=rf"corpus\.jsonl:2: {said}, which is not text; fix or drop that escape"):
        read_corpus(p)


@pytest.mark.parametrize("extra", [{"\ud800x": 1}, {"source": "\ud800"}, {"source": {"a": ["\udfff"]}}])
def test_a_lone_surrogate_in_a_dropped_field_is_dropped_with_it(tmp_path, caplog, extra):
    """Only the fields a reader keeps are refused for a lone surrogate (a corpus line's _id, title, text and
    metadata; a queries line's _id and text): a field it drops is dropped, with the warning it had."""
    p = tmp_path / "corpus.jsonl"
    p.write_text(json.dumps({"_id": "d1", "text": "x", **extra}) + "\n")
    with caplog.at_level("WARNING", logger="ragkit"):
        corpus = read_corpus(p)
    assert corpus.ids.tolist() == ["d1"] and corpus.texts.tolist() == ["x"] and corpus.metadata == {}
    assert f"dropped the documents' fields {next(iter(extra))!r}" in caplog.text
    q = tmp_path / "queries.jsonl"
    q.write_text(json.dumps({"_id": "q1", "text": "x", **extra}) + "\n")
    assert read_queries(q) == {"q1": "x"}


def test_read_queries_drops_metadata_holding_a_lone_surrogate(tmp_path):
    """read_queries keeps '_id' and 'text' only: a lone surrogate in metadata it drops is no error."""
    q = tmp_path / "queries.jsonl"
    q.write_text('{"_id": "q1", "text": "x", "metadata": {"a": "\\ud800"}}\n')
    assert read_queries(q) == {"q1": "x"}
    q.write_text('{"_id": "q1", "text": "x \\ud800"}\n')
    with pytest.raises(DataError, match=r"queries\.jsonl:1: field 'text' holds an unpaired surrogate escape"):
        read_queries(q)


@pytest.mark.parametrize("head", [b"\n", b"\n\r\n\n", b"\xef\xbb\xbf\n", b"\t\n"])
def test_a_qrels_header_under_blank_lines_is_read_as_the_header(tmp_path, head):
    """The header was recognised on line 1 only: under a blank line its 'score' was read as a grade ("relevance
    'score' is not a finite number")."""
    p = tmp_path / "test.tsv"
    p.write_bytes(head + b"query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td2\t0\n")
    assert read_qrels(p) == {"q1": {"d1": 1, "d2": 0}}


def test_messages_name_the_line_of_a_header_under_blank_lines(tmp_path, caplog):
    p = tmp_path / "test.tsv"
    p.write_text("\n\ncorpus-id\tquery-id\tscore\tannotators\nd1\tq1\t1\t3\nd2\tq1\t1\n")  # (read by name)
    with pytest.raises(DataError, match=r"test\.tsv:5: expected 4 tab-separated columns 'corpus-id query-id score "
                                        r"annotators', as the header on line 3 names them, got 3"):
        read_qrels(p)
    p.write_text("\nq1\td1\t\"1\"\nq1\td2\t\"0\"\n")
    with pytest.raises(DataError, match=r"test\.tsv:2: line 2 'q1\\td1\\t\"1\"': its grade \"1\" is quoted"):
        read_qrels(p)
    p.write_text("\nfoo\tbar\tbaz\nq1\td1\t1\n")
    with caplog.at_level("WARNING", logger="ragkit"):
        assert read_qrels(p) == {"q1": {"d1": 1}}
    assert "test.tsv:2: line 2 'foo\\tbar\\tbaz' is read as a header" in caplog.text
    p.write_text("\n\nqid\tdocid\n")
    with pytest.raises(DataError, match=r"test\.tsv \(its header, line 3\).*fix the header on line 3"):
        read_qrels(p)


def test_a_headerless_qrels_file_under_a_blank_line_keeps_its_first_judgement(tmp_path):
    p = tmp_path / "test.tsv"
    p.write_text("\nq1\td1\t1\nq1\td2\t2\n")
    assert read_qrels(p) == {"q1": {"d1": 1, "d2": 2}}


def test_ndcg_gains_the_grade_itself():
    """evaluate's nDCG is trec_eval's ndcg_cut (pytrec_eval, BEIR): gain = grade, discount log2(rank + 1); the
    exponential gain 2**grade - 1 gives another number on graded qrels, pinned here by hand."""
    from ragkit import Run, evaluate

    run = Run.from_dict({"q1": {"d1": 3.0, "d2": 2.0, "d3": 1.0}, "q2": {"d5": 1.0, "d6": 0.5}})
    qrels = {"q1": {"d1": 1, "d2": 2, "d4": 3}, "q2": {"d6": 2, "d5": 1}}
    pq = evaluate(run, qrels, ["ndcg@10", "ndcg@2"]).per_query
    linear_q1 = (1 / math.log2(2) + 2 / math.log2(3)) / (3 / math.log2(2) + 2 / math.log2(3) + 1 / math.log2(4))
    linear_q2 = (1 / math.log2(2) + 2 / math.log2(3)) / (2 / math.log2(2) + 1 / math.log2(3))
    assert pq["ndcg@10"]["q1"] == pytest.approx(linear_q1, abs=1e-12)
    assert pq["ndcg@10"]["q2"] == pytest.approx(linear_q2, abs=1e-12)
    cut = (1 / math.log2(2) + 2 / math.log2(3)) / (3 / math.log2(2) + 2 / math.log2(3))  # (the ideal cut at 2 too)
    assert pq["ndcg@2"]["q1"] == pytest.approx(cut, abs=1e-12)
    exponential_q1 = (1 + 3 / math.log2(3)) / (7 + 3 / math.log2(3) + 1 / 2)
    assert abs(pq["ndcg@10"]["q1"] - exponential_q1) > 0.1


def _count_nul_scans(monkeypatch) -> list[str]:
    """Count the calls of check_qrels_nul, check_qrels' own and any that ragkit.eval.metrics makes itself."""
    import ragkit._qrels as Q
    from ragkit.eval import metrics as M

    calls: list[str] = []
    original = Q.check_qrels_nul

    def counted(qrels, who):
        calls.append(who)
        return original(qrels, who)

    monkeypatch.setattr(Q, "check_qrels_nul", counted)
    monkeypatch.setattr(M, "check_qrels_nul", counted, raising=False)
    return calls


def test_checked_qrels_are_not_scanned_for_nuls_again(monkeypatch):
    """_evaluate scanned every id of the qrels for a NUL even with qrels_checked=True (its callers' qrels came from
    check_qrels / as_qrels, which refuse one), and after its own check_qrels otherwise: twice per evaluate."""
    from ragkit import Run, evaluate
    from ragkit.eval import metrics as M
    from ragkit.types import check_qrels

    run = Run.from_dict({"q1": {"d1": 2.0, "d2": 1.0}})
    qrels = check_qrels({"q1": {"d1": 1}, "q2": {"d3": 1}}, "test")
    calls = _count_nul_scans(monkeypatch)
    M._evaluate(run, qrels, ["ndcg@10"], qrels_checked=True)
    assert calls == []
    M._evaluate(run, qrels, ["ndcg@10"])  # (check_qrels' own scan only)
    assert calls == ["evaluate"]
    calls.clear()
    evaluate(run, {"q1": {"d1": 1}}, ["ndcg@10"])  # (as_qrels' scan only)
    assert calls == ["evaluate"]


@pytest.mark.parametrize("qrels", [{"q\x001": {"d1": 1}}, {"q1": {"d\x001": 1}}])
def test_a_nul_in_a_qrels_id_is_still_refused(qrels):
    from ragkit import Run, evaluate
    from ragkit.eval import metrics as M

    run = Run.from_dict({"q1": {"d1": 2.0}})
    for call in (lambda: evaluate(run, qrels), lambda: M._evaluate(run, qrels, ["ndcg@10"])):
        with pytest.raises(DataError, match=r"evaluate: qrels.* holds a NUL character"):
            call()
