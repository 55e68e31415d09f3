"""BM25's ``whitespace`` split and words that show nothing: a word made only of control characters (NUL, ...) or
U+FFFD was a term, so a query "\\x00" found every document holding a NUL word, where ``alnum`` and ``unicode`` make
no term of it and :func:`ragkit.encoders.sentence.blank_texts` calls such a text blank.  And the character ranges of
combining marks and format characters (:func:`_char_ranges`), read from fewer code points, are those of a scan of
every code point."""

from __future__ import annotations

import re
import sys
import unicodedata

import numpy as np
import pytest

from ragkit.encoders.sentence import blank_texts
from ragkit.retrievers import BM25, bm25 as bm25_module
from ragkit.retrievers.bm25 import Tokenizer, _clean
from ragkit.types import Corpus

SPLITS = ("alnum", "unicode", "whitespace")
#: Texts that show nothing, none of them white space only
UNSEEN = ["\x00", "\ufffd", "\u200b", "\x01\x02", "\x00\ufffd", "\u200b\x00", "\x7f", "\x9f", "\x1b\x00 \ufffd",
          "\ufeff\x00", "\u00ad"]


@pytest.mark.parametrize("split", SPLITS)
def test_a_text_that_shows_nothing_has_no_word(split):
    assert blank_texts(UNSEEN).all()  # (what the encoders call blank ...)
    tok = Tokenizer("none", "none", split)
    assert tok.surfaces(UNSEEN) == [[] for _ in UNSEEN]  # (... no split makes a word of)
    assert Tokenizer(split=split)(UNSEEN) == [[] for _ in UNSEEN]


def test_whitespace_drops_the_words_that_show_nothing_and_keeps_the_others_whole():
    tok = Tokenizer("none", "none", "whitespace")
    assert tok.surfaces(["alpha \x00 beta\ufffd \ufffd", "caf\u00e9 \x00\x01", "\x00word a\x00b"]) == [
        ["alpha", "beta\ufffd"], ["caf\u00e9"], ["\x00word", "a\x00b"]]
    # format characters: removed inside a word, a zero-width space splits (as for every split, by _clean)
    assert tok.surfaces(["a\u200bb", "a\u00adb", "a\u200db \u200b"]) == [["a", "b"], ["ab"], ["ab"]]


@pytest.mark.parametrize("variant", ["lucene", "okapi"])
def test_a_query_that_shows_nothing_finds_nothing_under_whitespace(variant):
    corpus = Corpus(ids=["nul", "fffd", "zwsp", "plain", "ctrl"],
                    texts=["alpha \x00 beta", "\ufffd gamma", "\u200b", "delta epsilon", "\x01\x02 zeta"])
    bm = BM25(k=5, tokenizer="whitespace", stemmer="none", variant=variant).fit(corpus)
    found = bm.search(UNSEEN)
    assert [ids.tolist() for ids in found.doc_ids] == [[] for _ in UNSEEN]
    assert not any(s.any() for s in bm.score_matrix(UNSEEN))
    assert sorted(bm.search(["alpha gamma"]).doc_ids[0].tolist()) == ["fffd", "nul"]  # (their words are found)


def test_a_document_that_shows_nothing_gets_no_term_under_whitespace():
    texts = ["\x00", "\ufffd", "\u200b", "\x00 \ufffd\x01", "alpha \x00", "beta"]
    bm = BM25(k=5, tokenizer="whitespace", stemmer="none", stopwords="none").fit(
        Corpus(ids=[f"d{i}" for i in range(len(texts))], texts=texts))
    assert sorted(bm.vocab_) == ["alpha", "beta"]
    assert bm.doc_lengths().tolist() == [0, 0, 0, 0, 1, 1]


#: A corpus without control characters, and its ``whitespace`` rankings and scores before the change (ragkit at
#: afad5af): they are unchanged
TEXTS = ["The cells were dividing, rapidly!\nCell division.", "state-of-the-art models\tof cells",
         "Un caf\u00e9 noir, s'il vous pla\u00eet.\u00a0Caf\u00e9 au lait.", "growth factor TNF-alpha and cells",
         "art; state of the art"]
QUERIES = ["cells", "caf\u00e9 art", "state of the art", "cells, rapidly! tnf-alpha"]
BEFORE = {
    "lucene": ([["d0", "d1", "d3"], ["d2", "d4"], ["d4"], ["d3", "d0"]],
               [[0.362716346979, 0.306945621967, 0.294855862856], [0.869695305824, 0.789461493492], [1.578922986984],
                [0.758366703987, 0.702989041805]]),
    "okapi": ([["d0", "d1", "d3"], ["d2", "d4"], ["d4"], ["d3", "d0"]],
              [[0.329327464104, 0.278690546751, 0.267713665962], [1.309512734413, 1.188703536987], [2.377407073975],
               [1.141883611679, 1.058500647545]]),
}


@pytest.mark.parametrize("variant", ["lucene", "okapi"])
def test_a_corpus_without_control_characters_ranks_as_before(variant):
    bm = BM25(k=5, tokenizer="whitespace", variant=variant).fit(
        Corpus(ids=[f"d{i}" for i in range(len(TEXTS))], texts=TEXTS))
    got = bm.search(QUERIES)
    ids, scores = BEFORE[variant]
    assert [x.tolist() for x in got.doc_ids] == ids
    for g, want in zip(got.scores, scores):
        assert g.tolist() == pytest.approx(want, rel=1e-9, abs=1e-12)


def test_whitespace_is_the_old_split_on_texts_without_hidden_characters():
    """The old split, ``_clean(text).split()``, on texts with every kind of white space, punctuation, letters
    outside ASCII and format characters, but no control character (other than white space) nor U+FFFD."""
    texts = TEXTS + ["a\x1cb\x1dc\x1ed\x1fe\x85f\u2028g\u2029h\u3000i\u00a0j\u2003k", "\tTabs\r\nand\x0bform\x0cfeeds ",
                     "\u0130stanbul \u00c9cole na\u0308ive \u65e5\u672c\u8a9e", "Donau\u00addampf one\u200btwo",
                     "", "   ", "punct!? (x) [y] {z} <w> \u00bfq\u00bf \U0001f600 emoji"]
    assert Tokenizer("none", "none", "whitespace").surfaces(texts) == [_clean(t).split() for t in texts]


def test_texts_without_hidden_characters_take_no_per_word_filter(monkeypatch):
    """The filter of words reads only texts holding a control character or U+FFFD: ASCII texts pass one
    ``bytes.translate``, others one regex search (the per-word filter, made to fail here, is not reached)."""
    class Refuse:
        def search(self, word: str) -> None:
            raise AssertionError(f"per-word filter reached for {word!r}")

    monkeypatch.setattr(bm25_module, "_SHOWN_CHAR", Refuse())
    tok = Tokenizer("none", "none", "whitespace")
    assert tok.surfaces(["Plain text,\twith\nnew lines\x1c", "caf\u00e9 na\u00efve\u2028x"]) == [
        ["plain", "text,", "with", "new", "lines"], ["caf\u00e9", "na\u00efve", "x"]]
    with pytest.raises(AssertionError, match="per-word filter"):
        tok.surfaces(["a \x00"])


def _char_ranges_full_scan() -> tuple[str, str, str]:
    """:func:`_char_ranges` before it read only some planes: ``unicodedata.category`` of every code point."""
    cats = np.array(list(map(unicodedata.category, map(chr, range(sys.maxunicode + 1)))))

    def ranges(inside: np.ndarray) -> str:
        edges = np.flatnonzero(np.diff(np.concatenate([[False], inside, [False]]).astype(np.int8)))
        return "".join(f"{re.escape(chr(a))}-{re.escape(chr(b - 1))}" for a, b in zip(edges[::2].tolist(),
                                                                                      edges[1::2].tolist()))

    formats = cats == "Cf"
    return ranges(np.char.startswith(cats, "M")), ranges(formats), ranges(formats[:0x10000])


def test_char_ranges_are_those_of_a_scan_of_every_code_point(monkeypatch):
    """The planes listed for this Python's Unicode version (``_MARK_PLANES``) hold all its marks and format
    characters, and a version not listed (every plane read) gives the same ranges too."""
    full = _char_ranges_full_scan()
    assert full[0] and full[1] and full[2]
    assert bm25_module._char_ranges.__wrapped__() == full
    monkeypatch.setattr(bm25_module, "_MARK_PLANES", {})
    assert bm25_module._char_ranges.__wrapped__() == full
