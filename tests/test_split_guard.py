"""Review findings: held-out guard holes, a silent pseudo-query fallback, a cut sources line, a zip unpacked whole.

1. ``ragkit train --split ./test`` (and ``train_set('./test')``, ``train_set('../qrels/test')``) learned from the
   test queries: the guard compared the split to the string "test", and ``qrels/<split>.tsv`` took any path.
2. ``ragkit eval`` of a ``dbnorm`` pipeline without ``--train-split`` fitted its query bank on pseudo-queries
   without a word (0.6181 vs 0.6193 on SciFact with ``--train-split train``).
3. ``ragkit ask``'s sources line cut titles at 60 characters with no ellipsis, leaving a space before ")".
4. ``load_beir`` of a local zip unpacked everything in it, without a size limit: a 306 KB zip holding a dataset
   and a 300 MB ``junk.bin`` left 301 MB in the cache.
"""

from __future__ import annotations

import io
import json
import os
import re
import zipfile
from pathlib import Path

import pytest

import ragkit.eval.beir as beir
from ragkit.errors import DataError, ParamError, RagkitError
from ragkit.eval import load_beir

DOCS = [("d1", "Vitamin D", "Vitamin D prevents fractures in elderly people."),
        ("d2", "Cats", "Cats sleep most of the day."),
        ("d3", "Dogs", "Dogs bark at strangers."),
        ("d4", "Coffee", "Coffee in Paris."),
        ("d5", "", "Fractures of the hip are common.")]
QUERIES = [("q1", "does vitamin D prevent fractures"), ("q2", "why do cats sleep"), ("q3", "dog barking"),
           ("q4", "coffee in Paris"), ("q5", "hip fracture"), ("q6", "sleeping cats"), ("q7", "barking dogs"),
           ("q8", "vitamin for bones")]
TEST = "q1\td1\t1\nq2\td2\t1\nq4\td4\t1\n"
TRAIN = "q3\td3\t1\nq5\td5\t1\nq6\td2\t1\nq7\td3\t1\nq8\td1\t1\n"
HEADER = "query-id\tcorpus-id\tscore\n"


def _files() -> dict[str, str]:
    return {"corpus.jsonl": "".join(json.dumps({"_id": i, "title": t, "text": x}) + "\n" for i, t, x in DOCS),
            "queries.jsonl": "".join(json.dumps({"_id": i, "text": t}) + "\n" for i, t in QUERIES),
            "qrels/test.tsv": HEADER + TEST, "qrels/train.tsv": HEADER + TRAIN}


def _tiny(root: Path) -> Path:
    for rel, text in _files().items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text, encoding="utf-8")
    return root


def _cli(*args: object):
    from typer.testing import CliRunner

    from ragkit.cli import app

    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})


# ---------------------------------------------------------------------- 1. a split is a name, never a path

@pytest.mark.parametrize("split", ["./test", "../qrels/test", "test/", ".test", "qrels\\test", ""])
def test_a_split_that_is_a_path_is_refused_everywhere_a_split_is_taken(tmp_path, split):
    ds = load_beir(_tiny(tmp_path / "tiny"))
    for call in (lambda: ds.train_set(split), lambda: ds.qrels(split), lambda: ds.queries(split),
                 lambda: beir.beir_qrels(ds.path, split), lambda: ds.train_set(split, allow_test=True)):
        with pytest.raises(DataError, match=rf"split name {re.escape(repr(split))} is not a file name; a split "
                                            r"names the judgements qrels/<split>\.tsv of a dataset, not a path: "
                                            r"expected a name such as 'train'.*the splits of .* are "
                                            r"\['test', 'train'\]"):
            call()


def test_no_other_name_of_qrels_test_gives_its_queries_for_training(tmp_path):
    data = _tiny(tmp_path / "tiny")
    (data / "qrels" / "heldout.tsv").symlink_to("test.tsv")  # the test split's judgements under another name
    ds = load_beir(data)
    with pytest.raises(ParamError, match=r"split 'heldout' \(its qrels file .*heldout\.tsv is qrels/test\.tsv\) "
                                         r"holds the queries BEIR scores are reported on.*this dataset has 'train'"):
        ds.train_set("heldout")
    assert len(ds.train_set("heldout", allow_test=True).queries) == 3
    assert len(ds.train_set("train").queries) == 5
    res = _cli("train", "--data", data, "-p", "bm25", "--split", "heldout", "--out", tmp_path / "m", "--no-report")
    assert res.exit_code == 2 and "learning from the test split is refused" in res.output, res.output
    assert not (tmp_path / "m").exists()
    res = _cli("eval", "--data", data, "-p", "bm25", "--split", "train", "--train-split", "heldout")
    assert res.exit_code == 2 and "--train-split heldout (its judgements" in res.output, res.output


@pytest.mark.parametrize("split", ["./test", "../qrels/test"])
def test_the_cli_refuses_a_split_that_is_a_path_before_any_work(tmp_path, split):
    data = _tiny(tmp_path / "tiny")
    res = _cli("train", "--data", data, "-p", "bm25", "--split", split, "--out", tmp_path / "m", "--no-report")
    assert res.exit_code == 2 and f"--split {split}: split name {split!r} is not a file name" in res.output, \
        res.output
    assert "the splits of" in res.output and "['test', 'train']" in res.output
    assert not (tmp_path / "m").exists()  # nothing learned from the test queries, nothing saved
    for opts in (("--split", split), ("--split", "train", "--train-split", split)):
        res = _cli("eval", "--data", data, "-p", "bm25", *opts)
        assert res.exit_code == 2 and f"split name {split!r} is not a file name" in res.output, res.output
    run = tmp_path / "a.run"
    run.write_text("q1 Q0 d1 1 1.0 x\n")
    res = _cli("compare", run, run, "--data", data, "--split", split)
    assert res.exit_code == 2 and f"split name {split!r} is not a file name" in res.output, res.output


def test_the_shared_scifact_test_split_cannot_be_reached_by_a_path(monkeypatch):
    scifact = next((p / "shared/data/beir/scifact" for p in Path(__file__).resolve().parents
                    if (p / "shared/data/beir/scifact/qrels/test.tsv").is_file()), None)
    if scifact is None:
        pytest.skip("the shared SciFact folder is not here")
    ds = load_beir(scifact)
    for split in ("./test", "../qrels/test"):
        with pytest.raises(DataError, match="is not a file name"):
            ds.train_set(split)


# ---------------------------------------------------------------------- 2. pseudo-queries are said

def test_eval_says_when_dbnorm_falls_back_to_pseudo_queries(tmp_path, monkeypatch):
    from ragkit.cli import _eval

    def stop(*a, **kw):
        raise RagkitError("stopped before the fit")

    monkeypatch.setattr(_eval, "_fit_and_score", stop)
    data = _tiny(tmp_path / "tiny")
    (tmp_path / "d.yaml").write_text("pipeline:\n  - dense: {k: 5}\n  - dbnorm: {}\n")
    res = _cli("eval", "--data", data, "-p", tmp_path / "d.yaml")
    assert ("note: pipeline[1].dbnorm reads the training queries themselves; without --train-split it fits with "
            "pseudo-queries (sentences drawn from the corpus) as the query bank instead, which scores differently; "
            "pass --train-split train to give it the queries") in res.output, res.output
    res = _cli("eval", "--data", data, "-p", tmp_path / "d.yaml", "--train-split", "train")
    assert "pseudo-queries" not in res.output, res.output
    (tmp_path / "p.yaml").write_text("pipeline:\n  - dense: {k: 5}\n  - dbnorm: {query_bank: pseudo}\n")
    res = _cli("eval", "--data", data, "-p", tmp_path / "p.yaml")
    assert "note:" not in res.output, res.output  # pseudo-queries chosen: nothing to say


# ---------------------------------------------------------------------- 3. the sources line

class _FakeEngine:
    """Stands for the local LLM: answers "ok" at once."""

    def generate(self, question: str, chunks: list[str], *, on_token=None, **kw) -> str:
        if on_token is not None:
            on_token("ok")
        return "ok"


def test_ask_sources_line_ends_a_cut_title_with_an_ellipsis(tmp_path, monkeypatch):
    from ragkit.generators.operator import Generate

    monkeypatch.setattr(Generate, "_fit", lambda self, corpus, train, upstream: setattr(self, "engine_", _FakeEngine()))
    title = "Microstructural development of human newborn cerebral white matter assessed in vivo"
    (tmp_path / "corpus.jsonl").write_text(json.dumps({"_id": "4983", "title": title, "text": "white matter"}) + "\n"
                                           + json.dumps({"_id": "7", "title": "Cats", "text": "cats sleep"}) + "\n")
    res = _cli("ask", "-p", "bm25", "--data", tmp_path / "corpus.jsonl", "white matter")
    assert res.exit_code == 0, res.output
    assert "sources: 4983 (Microstructural development of human newborn cerebral white…)" in res.output, res.output


def test_ask_sources_cut_a_long_title_with_an_ellipsis_and_no_stray_space():
    from ragkit.cli._ask import _cut

    title = "Microstructural development of human newborn cerebral white matter assessed in vivo"
    assert _cut(title, 60) == "Microstructural development of human newborn cerebral white…"
    assert len(_cut(title, 60)) <= 60
    assert _cut("Cats", 60) == "Cats"
    assert _cut("a\nb  c", 60) == "a b c"
    assert _cut("x" * 60, 60) == "x" * 60


# ---------------------------------------------------------------------- 4. a zip unpacks its dataset only

def _zip_bytes(members: dict[str, bytes | str], level: int = 6) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=level) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RAGKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("RAGKIT_BEIR_MAX_UNZIPPED", raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path / "cache"


def _cached_files(cache: Path) -> list[str]:
    return sorted(str(Path(here, f).relative_to(cache)) for here, _, files in os.walk(cache) for f in files)


def test_a_local_zip_unpacks_only_the_dataset_files(tmp_path, cache):
    junk = os.urandom(1 << 20)  # (incompressible: no bomb, just files that are not the dataset)
    members = {f"sf/{k}": v for k, v in _files().items()}
    members.update({"sf/junk.bin": junk, "sf/qrels/notes.txt": "x", "__MACOSX/sf/qrels/._test.tsv": "x",
                    "sf/.hidden/corpus.jsonl": "x", "README.md": "x"})
    (tmp_path / "sf.zip").write_bytes(_zip_bytes(members))
    ds = load_beir(tmp_path / "sf.zip")
    assert len(ds.corpus) == 5 and ds.splits == ["test", "train"]
    kept = [f.split(os.sep, 2)[2] for f in _cached_files(cache)]
    assert kept == ["sf/corpus.jsonl", "sf/qrels/test.tsv", "sf/qrels/train.tsv", "sf/queries.jsonl"]


def test_an_archive_of_several_datasets_keeps_each_ones_files(tmp_path, cache):
    members = {f"cqa/{s}/{k}": v for s in ("android", "gis") for k, v in _files().items()}
    members["cqa/android/extra.bin"] = b"x" * 100
    (tmp_path / "cqa.zip").write_bytes(_zip_bytes(members))
    ds = load_beir(tmp_path / "cqa.zip/android")
    assert len(ds.corpus) == 5
    assert [f.split(os.sep, 2)[2] for f in _cached_files(cache)] == sorted(
        f"cqa/{s}/{k}" for s in ("android", "gis") for k in ("corpus.jsonl", "queries.jsonl", "qrels/test.tsv",
                                                              "qrels/train.tsv"))


def test_a_zip_bomb_and_an_archive_over_the_limit_are_refused_before_unpacking(tmp_path, cache, monkeypatch):
    members: dict[str, bytes | str] = {f"sf/{k}": v for k, v in _files().items()}
    members["sf/corpus.jsonl"] = _files()["corpus.jsonl"] + " " * (80 << 20)  # 80 MiB that deflate to ~80 KB
    (tmp_path / "bomb.zip").write_bytes(_zip_bytes(members, level=9))
    with pytest.raises(DataError, match=r"archive member 'sf/corpus\.jsonl' would unpack to 80\.0 MiB from [\d,]+ "
                                        r"bytes \([\d,]+ times; .*zip bomb.*nothing was unpacked"):
        load_beir(tmp_path / "bomb.zip")
    assert _cached_files(cache) == []
    (tmp_path / "sf.zip").write_bytes(_zip_bytes({f"sf/{k}": v for k, v in _files().items()}))
    monkeypatch.setenv("RAGKIT_BEIR_MAX_UNZIPPED", "100")
    with pytest.raises(DataError, match=r"its BEIR files would unpack to .* over the limit of .*; .*raise the limit "
                                        r"with RAGKIT_BEIR_MAX_UNZIPPED"):
        load_beir(tmp_path / "sf.zip")
    assert _cached_files(cache) == []
    monkeypatch.setenv("RAGKIT_BEIR_MAX_UNZIPPED", "lots")
    with pytest.raises(ParamError, match=r"RAGKIT_BEIR_MAX_UNZIPPED='lots': expected a positive number of bytes"):
        load_beir(tmp_path / "sf.zip")
    monkeypatch.setenv("RAGKIT_BEIR_MAX_UNZIPPED", "1M")
    assert len(load_beir(tmp_path / "sf.zip").corpus) == 5
    assert beir.max_unzipped() == 1 << 20


def test_the_shared_scifact_as_a_zip_still_loads_and_downloads(tmp_path, cache, monkeypatch):
    scifact = next((p / "shared/data/beir/scifact" for p in Path(__file__).resolve().parents
                    if (p / "shared/data/beir/scifact/corpus.jsonl").is_file()), None)
    if scifact is None:
        pytest.skip("the shared SciFact folder is not here")
    www = tmp_path / "www"
    www.mkdir()
    with zipfile.ZipFile(www / "scifact.zip", "w", compression=zipfile.ZIP_DEFLATED) as z:  # as BEIR packs it
        for rel in ("corpus.jsonl", "queries.jsonl", "qrels/test.tsv", "qrels/train.tsv"):
            z.write(scifact / rel, f"scifact/{rel}")
    ds = load_beir(www / "scifact.zip")
    assert len(ds.corpus) == 5183 and len(ds.queries("test")) == 300
    got = beir.download_beir("scifact", base_url=www.as_uri(), dest=tmp_path / "dl")
    assert sorted(os.listdir(got)) == ["corpus.jsonl", "qrels", "queries.jsonl"]
    assert len(load_beir(got).train_set().queries) == 809
