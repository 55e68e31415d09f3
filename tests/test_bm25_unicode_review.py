"""BM25 tokenizers and text outside ASCII (review): NFC and NFD spellings give one set of terms, invisible format
characters (soft hyphen, ZWNJ, ...) do not split words, and documents and queries whose letters ``alnum`` drops
say so."""

from __future__ import annotations

import logging
import unicodedata

import pytest

from ragkit.retrievers import BM25
from ragkit.retrievers.bm25 import Tokenizer
from ragkit.types import Corpus, Queries

SPLITS = ("alnum", "unicode", "whitespace")


def nfd(text: str) -> str:
    return unicodedata.normalize("NFD", text)


def messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name.startswith("ragkit") and r.levelno >= logging.WARNING]


@pytest.mark.parametrize("split", SPLITS)
def test_nfc_and_nfd_spellings_give_the_same_terms(split):
    """``alnum`` encoded a decomposed "é" to UTF-8 before dropping non-ASCII bytes, so it kept the "e": NFD "café"
    was ``cafe`` (NFC: ``caf``), NFD "école" was ``e``, ``cole``; ``whitespace`` did not normalise at all.  Every
    split now NFC-normalises a text that is not ASCII first."""
    tok = Tokenizer("none", "none", split)
    words = ["café", "École", "naïve", "Zürich", "ẗ"]
    assert tok([nfd(w) for w in words]) == tok(words)
    assert tok(["T\u0308"]) == tok(["ẗ"])  # (lowercasing makes "t" + diaeresis composable: NFC again after it)
    bm = BM25(k=2, tokenizer=split, stemmer="none").fit(
        Corpus(ids=["cafe", "cafe_nfc"], texts=["cafe au lait", "un café noir"]))
    assert bm.search(["café", nfd("café")]).doc_ids[0].tolist() == ["cafe_nfc"]
    assert bm.search([nfd("café")]).doc_ids[0].tolist() == ["cafe_nfc"]


def test_alnum_reads_a_decomposed_word_as_the_composed_one():
    tok = Tokenizer("none", "none", "alnum")
    assert tok([nfd("L'école"), "L'école"]) == [["l", "cole"], ["l", "cole"]]


@pytest.mark.parametrize("split", SPLITS)
def test_format_characters_do_not_split_words(split):
    """A soft hyphen (U+00AD) split "Donau\\u00addampf\\u00adschifffahrt" into three terms and the word without it
    found nothing; Persian "می\\u200cخواهم" (ZWNJ) split too.  UAX #29 (rule WB4) ignores format characters inside a
    word: they are removed.  A zero-width space is a word boundary there, and stays one."""
    tok = Tokenizer("none", "none", split)
    assert tok(["Donau\u00addampf\u00adschifffahrt"]) == tok(["Donaudampfschifffahrt"]) == [["donaudampfschifffahrt"]]
    for marked in ("\ufeffword", "wo\u2060rd", "wo\u200drd", "w\u200eord"):  # BOM, word joiner, ZWJ, LRM
        assert tok([marked]) == [["word"]], ascii(marked)
    assert tok(["one\u200btwo"]) == [["one", "two"]]
    assert tok(["cafe\u00ad\u0301"]) == tok(["café"])  # (removed before NFC: the accent composes)
    corpus = Corpus(ids=["shy", "plain"], texts=["Die Donau\u00addampf\u00adschifffahrt", "ein Dampfer"])
    bm = BM25(k=2, tokenizer=split, stemmer="none").fit(corpus)
    assert bm.search(["Donaudampfschifffahrt"]).doc_ids[0].tolist() == ["shy"]


def test_unicode_keeps_a_persian_word_with_a_zwnj_whole_and_does_not_fold_full_width_forms():
    tok = Tokenizer("none", "none", "unicode")
    assert tok(["می\u200cخواهم بروم"]) == [["میخواهم", "بروم"]]
    bm = BM25(k=2, tokenizer="unicode", stemmer="none").fit(
        Corpus(ids=["fa", "en"], texts=["می\u200cخواهم بروم", "I want to go"]))
    assert bm.search(["میخواهم"]).doc_ids[0].tolist() == ["fa"]
    assert tok(["ｉＰｈｏｎｅ"]) == [["ｉｐｈｏｎｅ"]]  # no NFKC (documented): full-width stays full-width


def test_alnum_fit_warns_of_documents_whose_letters_it_drops_under_a_quarter_of_the_corpus(caplog):
    """76 English and 24 Chinese documents: the 25% check of the script did not warn, and the Chinese documents
    were indexed with their numbers only ("这是关于猫的中文文档12" -> "12"): no query word could find them, and
    nothing said so.  The fit now warns, once, with the count, ids and the fix."""
    texts = [f"english document number {i} about cats" for i in range(76)] + [
        f"这是关于猫的中文文档{i}" for i in range(24)]
    corpus = Corpus(ids=[f"d{i}" for i in range(100)], texts=texts)
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        BM25().fit(corpus)
    (msg,) = messages(caplog)
    assert msg.startswith("bm25: no query word finds 24 of the 100 documents (ids 'd76', 'd77', 'd78', ...): they "
                          "hold letters outside ASCII, which tokenizer 'alnum' (the default) drops"), msg
    assert msg.endswith("set 'tokenizer: unicode' (BM25(tokenizer=\"unicode\")) to index them"), msg
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        BM25()._check_script(corpus)  # (a sharded retriever's check of its whole corpus: no counts to read)
    assert messages(caplog) == [msg]
    caplog.clear()
    plain = Corpus.from_texts(["To be or not to be", "They met at a café", *(f"The cat sat {i}" for i in range(8))])
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        BM25(tokenizer="unicode").fit(corpus)
        BM25().fit(plain)
        BM25()._check_script(plain)
    assert messages(caplog) == []  # (stopwords only: no letter dropped; a café has other words)


def test_alnum_add_warns_of_documents_whose_letters_it_drops(caplog):
    bm = BM25().fit(Corpus.from_texts([f"cats sleep {i}" for i in range(10)]))
    added = Corpus(ids=[f"a{i}" for i in range(9)] + ["zh"], texts=[f"dogs bark {i}" for i in range(9)] + ["猫 the 7"])
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        bm.add(added)
    (msg,) = messages(caplog)
    assert msg.startswith("bm25.add: no query word finds 1 of the 10 documents added (ids 'zh'): "), msg
    assert msg.endswith("and fit the whole corpus again to index them"), msg


def test_alnum_fit_above_a_quarter_says_it_once_with_the_documents_without_a_word(caplog):
    corpus = Corpus(ids=["ja1", "ja2", "en"], texts=["東京タワーは電波塔です。", "富士山は高い山です。", "cats"])
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        BM25().fit(corpus)
    (msg,) = messages(caplog)
    assert msg.startswith("bm25: 67% of the documents (3 sampled) are written in letters outside ASCII"), msg
    assert msg.endswith("; 2 of the 3 documents (ids 'ja1', 'ja2') hold no other word: no query word finds them"), msg


def test_alnum_query_without_a_word_warns_once_per_retriever(caplog):
    """Under ``alnum`` the query "猫" found nothing and nothing said why.  A search now warns, naming the query, once
    per retriever (a served one logs it once, not for every search)."""
    corpus = Corpus.from_texts(["cats sleep", "dogs bark", "birds sing"])
    bm = BM25().fit(corpus)
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        bm.search(Queries(ids=["ok", "unknown", "mixed"], texts=["cats", "zebras", "猫 zebras"]))
        assert messages(caplog) == []  # (words the index lacks: no warning)
        assert bm.search(Queries(ids=["qa", "qb"], texts=["猫", "犬"])).doc_ids[0].tolist() == []
        bm.search(["猫"])
        bm.search(["犬"])
    (msg,) = messages(caplog)
    assert msg.startswith("bm25: query 'qa' ('猫'; 1 more queries of the batch alike) finds nothing: it holds letters "
                          "outside ASCII, which tokenizer 'alnum' (the default) drops, and no other word; set "
                          "'tokenizer: unicode'"), msg
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        BM25().fit(corpus).search(["猫"])  # another retriever: its own warning
        BM25(tokenizer="unicode").fit(corpus).search(["猫"])
    assert len(messages(caplog)) == 1 and "query 'q0' ('猫')" in messages(caplog)[0]
