"""CLI review s50: ranged options refused by name before any work, help texts that say what the commands do,
a misspelt BEIR name with a suggestion, one ``--out`` probe, ``--pipeline`` resolved once, and messages that name
the option given."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import TINY_DOCS as DOCS, cli as _cli, file_mirror as _mirror, tiny_beir as _tiny

from ragkit.params import MAX_INT


def _index(root: Path) -> Path:
    """A fitted, saved BM25 pipeline over :data:`DOCS`."""
    from ragkit.pipelines import Pipeline
    from ragkit.retrievers import BM25
    from ragkit.types import Corpus

    pipe = Pipeline([BM25()])
    pipe.fit(Corpus([d[0] for d in DOCS], [d[2] for d in DOCS], [d[1] for d in DOCS]))
    pipe.save(root)
    return root


def _no_work(monkeypatch, module: str, name: str) -> list[str]:
    """Make ``module.name`` (the command's first piece of work: loading the index, resolving the pipeline)
    record that it ran and fail; the list of its calls."""
    import importlib

    calls: list[str] = []

    def refuse(*args, **kwargs):
        calls.append(name)
        raise AssertionError(f"{name} ran: the option should have been refused before any work")

    monkeypatch.setattr(importlib.import_module(module), name, refuse)
    return calls


# ------------------------------------------------------------------ 1. ranged options' upper bound


def test_search_k_beyond_max_int_is_refused_by_name_before_the_index_loads(tmp_path, monkeypatch):
    """``search --k 3000000000`` loaded the index, then said "search option k: expected a positive integer of at
    most 2,147,483,647"; now the flag's range check refuses it, naming --k, and --help states the range."""
    idx = _index(tmp_path / "idx")
    calls = _no_work(monkeypatch, "ragkit.cli._search", "_load_folder")
    res = _cli("search", "--index", idx, "--k", 3_000_000_000, "vitamin")
    assert res.exit_code == 2, res.output
    assert "Invalid value for '--k': expected an integer from 1 to 2,147,483,647, got '3000000000'" in res.output
    assert "search option k" not in res.output and calls == []
    assert "[an integer from 1 to 2,147,483,647]" in " ".join(_cli("search", "--help").output.split())
    monkeypatch.undo()
    assert _cli("search", "--index", idx, "--k", MAX_INT, "vitamin").exit_code == 0  # (the bound itself: taken)


def test_eval_depth_beyond_max_int_less_one_is_refused_before_the_fit(tmp_path, monkeypatch):
    """``eval --depth 3000000000`` fitted the pipeline, then said "search option k ... got 3000000001" (its depth
    + 1, for datasets whose queries are documents); now --depth takes at most MAX_INT - 1 (searched one deeper:
    MAX_INT), refused by name before the pipeline is resolved, the range in --help."""
    data = _tiny(tmp_path / "data")
    calls = _no_work(monkeypatch, "ragkit.cli._eval", "resolve_pipeline")
    for depth in (3_000_000_000, MAX_INT):
        res = _cli("eval", "--data", data, "--pipeline", "bm25", "--depth", depth)
        assert res.exit_code == 2, res.output
        assert f"Invalid value for '--depth': expected an integer from 1 to 2,147,483,646, got '{depth}'" in res.output
    assert calls == []
    assert "[an integer from 1 to 2,147,483,646]" in " ".join(_cli("eval", "--help").output.split())
    monkeypatch.undo()
    res = _cli("eval", "--data", data, "--pipeline", "bm25", "--depth", MAX_INT - 1)
    assert res.exit_code == 0, res.output


# ------------------------------------------------------------------ 2. train's help says when the report runs


def _six_train(root: Path) -> Path:
    """:func:`_tiny` with all six queries judged in the train split (enough for the held-out report)."""
    _tiny(root)
    (root / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(
        f"q{i}\t{d}\t1\n" for i, d in zip(range(1, 7), ("d1", "d2", "d3", "d4", "d2", "d3"))), encoding="utf-8")
    return root


def test_train_help_says_a_pipeline_that_learns_nothing_skips_the_report(tmp_path):
    """``train --help`` said the report runs "unless --no-report" and by default "when the split has that many"
    queries; a pipeline that learns nothing (bm25) skips it unless --report.  The help now says so, and the
    command does what it says."""
    page = " ".join(_cli("train", "--help").output.split())
    assert "A pipeline that learns nothing (bm25 alone) skips the report unless --report" in page
    assert "report when the split has that many and the pipeline learns from judged queries" in page
    assert "Unless --no-report, a held-out report comes first" not in page
    data = _six_train(tmp_path / "data")
    res = _cli("train", "--data", data, "--pipeline", "bm25", "--out", tmp_path / "a")
    assert res.exit_code == 0, res.output
    assert "held-out report is skipped" in res.output and "held-out 1 of 6" not in res.output
    res = _cli("train", "--data", data, "--pipeline", "bm25", "--out", tmp_path / "b", "--report")
    assert res.exit_code == 0, res.output
    assert "held-out 1 of 6 train queries" in res.output


# ------------------------------------------------------------------ 3. a misspelt BEIR name



def test_a_misspelt_beir_name_is_bad_input_with_a_suggestion(tmp_path, monkeypatch):
    """``--data scifcat`` fetched scifcat.zip, was told there is none and exited 1 (a failure worth retrying) with
    no suggestion; it is a typo of a BEIR name: exit 2, "did you mean the BEIR dataset 'scifact'?"."""
    from ragkit import load_beir
    from ragkit.errors import DataError
    from ragkit.eval.beir import DownloadError

    _mirror(tmp_path, monkeypatch)
    for command in (["eval", "--data", "scifcat", "-p", "bm25"],
                    ["train", "--data", "nfcorpsu", "-p", "bm25", "--out", tmp_path / "out"]):
        res = _cli(*command)
        assert res.exit_code == 2, res.output
        right = "scifact" if "scifcat" in command else "nfcorpus"
        assert res.output.rstrip().endswith(f"; did you mean the BEIR dataset {right!r}?"), res.output
    with pytest.raises(DataError, match=r"could not download BEIR dataset 'scifcat'.*did you mean the BEIR dataset "
                                        r"'scifact'\?$") as caught:
        load_beir("scifcat")
    assert not isinstance(caught.value, DownloadError)


def test_a_known_name_or_an_unknown_one_a_mirror_lacks_stays_a_failed_download(tmp_path, monkeypatch):
    """A BEIR name the mirror lacks (an incomplete mirror), or a name close to none of BEIR's on a mirror (which
    may host datasets of its own): a failed download still, exit 1, no suggestion."""
    _mirror(tmp_path, monkeypatch)
    for name in ("scifact", "my-own-data"):
        res = _cli("eval", "--data", name, "-p", "bm25")
        assert res.exit_code == 1, res.output
        assert f"could not download BEIR dataset {name!r}" in res.output and "did you mean" not in res.output


def test_a_name_beirs_own_server_lacks_is_bad_input_listing_its_datasets(tmp_path, monkeypatch):
    """From BEIR's own server (no $RAGKIT_BEIR_URL), which holds only BEIR's datasets, a 404 for another name is
    bad input (2), and the error lists the names it has.  (BEIR's address is pointed at a local folder here.)"""
    import ragkit.eval._download as download

    www = _mirror(tmp_path, monkeypatch)
    monkeypatch.delenv("RAGKIT_BEIR_URL")
    monkeypatch.setattr(download, "BEIR_URL", www.as_uri())
    res = _cli("eval", "--data", "my-own-data", "-p", "bm25")
    assert res.exit_code == 2, res.output
    assert "; BEIR's datasets are arguana, climate-fever, " in res.output and "webis-touche2020" in res.output


# ------------------------------------------------------------------ 4. train --out: one probe, named as given


def test_train_out_refusals_name_the_option_as_given(tmp_path, monkeypatch):
    """``train --out <a file>`` said "<resolved path>: exists and is not a folder; refusing to replace it with a
    ragkit save" (a foreign folder, one inside a saved pipeline: the same), naming neither --out nor the path as
    typed; every refusal now starts "--out <as given>: ", before the dataset is read."""
    import ragkit

    data = _tiny(tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    Path("afile").write_text("x")
    Path("mine").mkdir()
    Path("mine/notes.txt").write_text("keep")
    _index(tmp_path / "saved")
    monkeypatch.setattr(ragkit, "load_beir", lambda *a, **k: pytest.fail("the dataset was read"))
    for out, said in (("afile", "exists and is not a folder; a fitted pipeline is saved as a folder"),
                      ("mine", "a non-empty folder that is not a ragkit save"),
                      ("saved/ops/00-bm25", "inside the saved pipeline at "),
                      ("afile/model", "afile is a file, not a folder")):
        res = _cli("train", "--data", data, "-p", "bm25", "--out", out)
        assert res.exit_code == 2, res.output
        assert res.output.startswith(f"error: --out {out}: {said}"), res.output
        assert str(tmp_path / out) not in res.output
    assert Path("afile").read_text() == "x" and [p.name for p in Path("mine").iterdir()] == ["notes.txt"]


def test_train_out_and_file_outputs_share_one_probe(tmp_path, monkeypatch):
    """``train`` copied ``_prepare_output``'s folder probe; both now call :func:`_probe_writable`."""
    from ragkit.cli import _outputs

    seen: list[tuple[str, bool]] = []
    real = _outputs._probe_writable
    monkeypatch.setattr(_outputs, "_probe_writable",
                        lambda path, option, *, folder=False: seen.append((option, folder)) or real(
                            path, option, folder=folder))
    data = _six_train(tmp_path / "data")
    res = _cli("train", "--data", data, "-p", "bm25", "--out", tmp_path / "m", "--no-report")
    assert res.exit_code == 0, res.output
    res = _cli("eval", "--data", data, "-p", tmp_path / "m", "--split", "test", "-o", tmp_path / "r.json")
    assert res.exit_code == 0, res.output
    assert seen[:2] == [("--out", True), ("--output", False)], seen


# ------------------------------------------------------------------ 5. train resolves --pipeline once

LEARNED = ("pipeline:\n  - parallel:\n      branches:\n        - bm25: {k: 10}\n"
           "        - bm25: {k: 10, variant: okapi, b: 0.3}\n      fuse:\n        rrf: {learn: true}\n")


def test_train_resolves_the_pipeline_once(tmp_path, monkeypatch):
    """``train --pipeline <saved folder>`` with its held-out report resolved --pipeline four times (four loads of
    the folder, checksums and all); now once, the report's two fits on unfitted copies of it, and what is saved
    is the same; the report's unlearned fit no longer says that a fit without train drops what the folder learned."""
    from ragkit.cli import _pipeline, _train
    from ragkit.pipelines import store

    data = _six_train(tmp_path / "data")
    (tmp_path / "l.yaml").write_text(LEARNED, encoding="utf-8")
    res = _cli("train", "--data", data, "-p", tmp_path / "l.yaml", "--out", tmp_path / "saved", "--no-report")
    assert res.exit_code == 0, res.output
    resolved: list[str] = []
    loads: list[str] = []
    real_resolve, real_load = _pipeline.resolve_pipeline, store.load_pipeline
    monkeypatch.setattr(_train, "resolve_pipeline", lambda spec: resolved.append(spec) or real_resolve(spec))
    monkeypatch.setattr(store, "load_pipeline", lambda *a, **k: loads.append(str(a[0])) or real_load(*a, **k))
    for spec, out in ((tmp_path / "saved", "again"), (tmp_path / "l.yaml", "from-yaml")):
        resolved.clear(), loads.clear()
        res = _cli("train", "--data", data, "-p", spec, "--out", tmp_path / out, "--report")
        assert res.exit_code == 0, res.output
        assert "held-out 1 of 6 train queries" in res.output and "unlearned" in res.output
        assert "fit without train" not in res.output
        assert resolved == [str(spec)], resolved
        assert len(loads) == (1 if out == "again" else 0), loads
    from ragkit.pipelines import Pipeline

    again, fresh = Pipeline.load(tmp_path / "again"), Pipeline.load(tmp_path / "from-yaml")
    assert again.to_yaml() == fresh.to_yaml() == Pipeline.from_yaml(LEARNED).to_yaml()
    assert again.learned() == fresh.learned()


def test_the_report_copies_read_back_as_the_pipeline(tmp_path):
    """:func:`_unfitted_copy` of each example pipeline, of an operator name's and of a saved learned folder's is
    that pipeline (its YAML, its steps' parameters), unfitted."""
    from ragkit.cli._pipeline import resolve_pipeline
    from ragkit.pipelines import Pipeline
    from ragkit.pipelines.yaml import unfitted_copy as _unfitted_copy

    examples = Path(__file__).resolve().parent.parent / "examples"
    fitted = Pipeline.from_yaml(LEARNED)
    fitted.fit(_corpus(), None)
    fitted.save(tmp_path / "saved")
    specs = [*map(str, sorted(examples.glob("*.yaml"))), "bm25", str(tmp_path / "saved")]
    for spec in specs:
        pipe, _ = resolve_pipeline(spec)
        copy = _unfitted_copy(pipe)
        assert copy.to_yaml() == pipe.to_yaml() and repr(copy) == repr(pipe), spec
        assert not any(getattr(leaf, "is_fitted", False) and not leaf.stateless for leaf in _leaves(copy)), spec


def _corpus():
    from ragkit.types import Corpus

    return Corpus([d[0] for d in DOCS], [d[2] for d in DOCS], [d[1] for d in DOCS])


def _leaves(pipe):
    from ragkit.pipelines._compose import iter_leaves

    return list(iter_leaves(pipe))


# ------------------------------------------------------------------ 6. search --run: query ids before the index


def test_search_refuses_a_query_id_the_run_cannot_hold_before_loading_the_index(tmp_path, monkeypatch):
    """``search --queries F --run R`` with the query id "q 1" said "refused before any work" after loading the whole
    index; the query ids are checked right after the queries are read (the document ids still after the load)."""
    idx = _index(tmp_path / "idx")
    monkeypatch.chdir(tmp_path)
    Path("q.tsv").write_text("q 1\tvitamin\nq2\tcats\n", encoding="utf-8")
    calls = _no_work(monkeypatch, "ragkit.cli._search", "_load_folder")
    res = _cli("search", "--index", idx, "--queries", "q.tsv", "--run", "r.trec")
    assert res.exit_code == 2, res.output
    assert "q.tsv:1: --run r.trec: cannot write a TREC run file: query id 'q 1' holds whitespace" in res.output
    assert calls == [] and not Path("r.trec").exists()
    monkeypatch.undo()
    monkeypatch.chdir(tmp_path)
    Path("q.tsv").write_text("q1\tvitamin\nq2\tcats\n", encoding="utf-8")
    res = _cli("search", "--index", idx, "--queries", "q.tsv", "--run", "r.trec")
    assert res.exit_code == 0 and Path("r.trec").read_text().startswith("q1 Q0 d1 1 "), res.output


# ------------------------------------------------------------------ 7. messages for the command line


def test_a_step_folder_is_refused_with_the_option_that_loads_its_pipeline(tmp_path, monkeypatch):
    """``search --index saved/ops/00-bm25`` (and ``validate``, ``eval --pipeline`` there) advised "load that folder
    with Pipeline.load('/x/saved')", Python; a CLI user is given the option (or command) with the pipeline's
    folder."""
    monkeypatch.chdir(tmp_path)
    data = _tiny(tmp_path / "data")
    _index(tmp_path / "it's")
    step = "it's/ops/00-bm25"
    whole = "'" + str(tmp_path / "it").replace("'", "'\"'\"'") + "'\"'\"'s'"  # (shell-quoted)
    cases = ((["search", "--index", step, "x"], f"error: --index {step}: ", f"--index {whole}"),
             (["eval", "--data", data, "--pipeline", step], f"error: --pipeline {step}: ", f"--pipeline {whole}"),
             (["validate", step], f"error: {step}: ", f"ragkit validate {whole}"))
    for args, starts, advice in cases:
        res = _cli(*args)
        assert res.exit_code == 2, res.output
        text = " ".join(res.output.split())
        assert text.startswith(starts + "one step of the saved pipeline at "), text
        assert f"(its documents are saved there): give the pipeline's folder: {advice}" in text, text
        assert "Pipeline.load(" not in text
    res = _cli("search", "--index", "it's", "vitamin")  # (the advice runs)
    assert res.exit_code == 0, res.output


@pytest.mark.parametrize("args, option", [
    (["search", "--index", "", "x"], "--index"),
    (["search", "--index", "idx", "--queries", ""], "--queries"),
    (["search", "--index", "idx", "x", "--run", ""], "--run"),
    (["search", "--index", "idx", "x", "-o", ""], "--output"),
    (["eval", "--data", "", "-p", "bm25"], "--data"),
    (["eval", "--data", "data", "-p", ""], "--pipeline"),
    (["eval", "--data", "data", "-p", "bm25", "--run", ""], "--run"),
    (["train", "--data", "", "-p", "bm25", "--out", "m"], "--data"),
    (["train", "--data", "data", "-p", "bm25", "--out", ""], "--out"),
    (["ask", "q", "-p", ""], "--pipeline"),
    (["ask", "q", "-p", "bm25", "--cache-dir", ""], "--cache-dir"),
    (["validate", ""], "PIPELINE"),
    (["compare", "", "b.json"], "RESULTS"),
    (["compare", "a.json", "b.json", "--baseline", ""], "--baseline"),
])
def test_an_empty_path_is_refused_not_taken_as_the_current_folder(args, option, tmp_path, monkeypatch, capsys):
    """``--data ""`` and ``--index ""`` (an unset variable: ``--index "$IDX"``) were taken as the current folder
    (``Path("")`` is ``Path(".")``): "--index .: a folder, but neither a saved pipeline ...", or a dataset found in
    it; now a usage error naming the option, before any work."""
    from ragkit.cli import main

    monkeypatch.chdir(tmp_path)
    _tiny(tmp_path / "data")
    _index(tmp_path / "idx")
    _tiny(tmp_path)  # (the current folder holds a dataset: it was evaluated)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"error: Invalid value for '{option}': expected " in err and ", got '' (an empty path; for the current " \
        "folder give '.')" in err, err
    assert len(err.strip().splitlines()) == 1, err


def test_a_queries_file_that_cannot_be_read_is_named_as_the_option(tmp_path, monkeypatch):
    """``search --queries nope.tsv`` said "nope.tsv: file not found" without naming --queries; what is said of the
    file itself starts "--queries <file>: " (a line's error keeps its "file:line: ")."""
    idx = _index(tmp_path / "idx")
    monkeypatch.chdir(tmp_path)
    Path("folder").mkdir()
    Path("empty.tsv").write_text("")
    Path("blank.tsv").write_text("q1\t\n")
    for given, said in (("nope.tsv", "file not found; expected a queries.jsonl"), ("folder", "not a file"),
                        ("empty.tsv", "no query in the file")):
        res = _cli("search", "--index", idx, "--queries", given)
        assert res.exit_code == 2 and res.output.startswith(f"error: --queries {given}: {said}"), res.output
    res = _cli("search", "--index", idx, "--queries", "blank.tsv")
    assert res.exit_code == 2 and res.output.startswith("error: blank.tsv:1: the query text is blank"), res.output


def test_train_refuses_a_list_of_datasets_saying_it_takes_one(tmp_path, monkeypatch):
    """``train --data a,b`` said "BEIR dataset 'a,b': not found locally ... is not a dataset name"; train takes one
    dataset (eval takes a list).  A folder whose name holds a comma is still one dataset."""
    monkeypatch.chdir(tmp_path)
    _tiny(tmp_path / "a")
    _tiny(tmp_path / "b")
    res = _cli("train", "--data", "a,b", "-p", "bm25", "--out", "m")
    assert res.exit_code == 2, res.output
    assert res.output.startswith("error: --data a,b: a comma-separated list; train fits and saves one pipeline, on "
                                 "one dataset: give one name or folder (ragkit eval --data a,b evaluates a list)")
    assert not Path("m").exists()
    _tiny(tmp_path / "c,d")
    res = _cli("train", "--data", "c,d", "-p", "bm25", "--out", "m")
    assert res.exit_code == 0, res.output


def test_a_run_tag_without_a_run_file_is_refused(tmp_path):
    """``--run-tag`` without ``--run`` was ignored without a word (search and eval); refused before any work, as
    eval refuses --k with --metrics: the option that would do nothing is named, with the one it needs."""
    idx = _index(tmp_path / "idx")
    data = _tiny(tmp_path / "data")
    said = ("error: --run-tag 'mine': the tag column of the --run file, but no --run is given, so it would be "
            "ignored; add --run FILE (or '-' for standard output), or leave out --run-tag")
    for args in (["search", "--index", idx, "vitamin", "--run-tag", "mine"],
                 ["search", "--index", idx, "vitamin", "--run-tag", "mine", "-o", tmp_path / "r.json"],
                 ["eval", "--data", data, "-p", "bm25", "--run-tag", "mine", "-o", tmp_path / "r.json"]):
        res = _cli(*args)
        assert res.exit_code == 2 and res.output.startswith(said), res.output
        assert not (tmp_path / "r.json").exists()
    res = _cli("search", "--index", idx, "vitamin", "--run-tag", "mine", "--run", "-")
    assert res.exit_code == 0 and res.stdout.split()[-1] == "mine", res.output


# ------------------------------------------------------------------ 8. a damaged cached download


def test_a_cached_download_lacking_a_split_says_how_to_download_it_again(tmp_path, monkeypatch):
    """``qrels/test.tsv`` deleted from ``$RAGKIT_CACHE/beir/<name>`` said "no qrels for split 'test'" as of a
    user's folder; it now says the folder is ragkit's download and that deleting it downloads it again (and
    that advice works).  A user's own folder is told nothing of the kind."""
    import io
    import shutil
    import zipfile

    www = _mirror(tmp_path, monkeypatch)
    src = _tiny(tmp_path / "src" / "sf")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for f in sorted(src.rglob("*")):
            if f.is_file():
                z.write(f, f"sf/{f.relative_to(src).as_posix()}")
    (www / "sf.zip").write_bytes(buf.getvalue())
    assert _cli("eval", "--data", "sf", "-p", "bm25").exit_code == 0
    cached = tmp_path / "cache" / "beir" / "sf"
    (cached / "qrels" / "test.tsv").unlink()
    res = _cli("eval", "--data", "sf", "-p", "bm25")
    assert res.exit_code == 2, res.output
    text = " ".join(res.output.split())
    assert "no qrels for split 'test'" in text and (
        f"({cached} is ragkit's download of 'sf', in its cache: if qrels/test.tsv was removed from it, delete that "
        "folder and the next load downloads it again)") in text, text
    shutil.rmtree(cached)
    assert _cli("eval", "--data", "sf", "-p", "bm25").exit_code == 0
    (src / "qrels" / "test.tsv").unlink()
    res = _cli("eval", "--data", src, "-p", "bm25")
    assert res.exit_code == 2 and "no qrels for split 'test'" in res.output and "ragkit's download" not in res.output
