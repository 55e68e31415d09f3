"""BEIR archives holding gzip-compressed files, and dataset names in other letters (review: /tmp/rv_beir2).

Review: a zip (local, or from a mirror) holding ``corpus.jsonl.gz`` and ``queries.jsonl.gz`` (as Hugging Face's
BeIR copies do) was refused as having "no corpus.jsonl, queries.jsonl", the ``.gz`` members unnamed (a folder
gets the ``gunzip`` hint); ``--data NFCorpus`` with ``nfcorpus`` cached fetched ``NFCorpus.zip`` (HTTP 404, no
hint) and ``--data SciFact`` with ``$RAGKIT_BEIR_DIR/scifact`` there fetched ``SciFact.zip``.
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import zipfile

import pytest
from test_beir_download_review2 import CORPUS, QRELS, QUERIES, _cli, _write, enable_socket, mirror  # noqa: F401

from ragkit.errors import DataError
from ragkit.eval import download_beir, load_beir


def _gz_zip(top: str, *, gz_qrels: bool = False) -> bytes:
    """A zip ``<top>/corpus.jsonl.gz``, ``<top>/queries.jsonl.gz``, ``<top>/qrels/test.tsv`` (its ``.gz`` too when
    ``gz_qrels``), as Hugging Face's BeIR copies hold a dataset."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr(f"{top}/corpus.jsonl.gz", gzip.compress("".join(json.dumps(r) + "\n" for r in CORPUS).encode()))
        z.writestr(f"{top}/queries.jsonl.gz", gzip.compress("".join(json.dumps(r) + "\n" for r in QUERIES).encode()))
        if gz_qrels:
            z.writestr(f"{top}/qrels/test.tsv.gz", gzip.compress(QRELS.encode()))
        else:
            z.writestr(f"{top}/qrels/test.tsv", QRELS)
    return buf.getvalue()


# ---------------------------------------------------------------------- 1. gzip-compressed files in an archive
GZ_NAMED = (r"the archive has no gzds/corpus\.jsonl, gzds/queries\.jsonl; it holds gzds/corpus\.jsonl\.gz, "
            r"gzds/queries\.jsonl\.gz gzip-compressed instead .*unzip the archive, gunzip those files \(gunzip -r "
            r"<its folder>\), then load that folder, or zip it again; expected a BEIR dataset .*nothing was cached")


def test_a_local_zip_of_gzipped_files_names_them_and_how_to_gunzip(tmp_path, monkeypatch):
    monkeypatch.setenv("RAGKIT_CACHE", str(tmp_path / "cache"))
    archive = tmp_path / "gzds.zip"
    archive.write_bytes(_gz_zip("gzds"))
    with pytest.raises(DataError, match=rf"{archive}: {GZ_NAMED}"):
        load_beir(archive)
    res = _cli("eval", "--data", archive, "-p", "bm25")
    assert res.exit_code == 2 and "it holds gzds/corpus.jsonl.gz, gzds/queries.jsonl.gz" in res.output, res.output
    archive.write_bytes(_gz_zip("gzds", gz_qrels=True))  # a gzipped qrels file is named too
    with pytest.raises(DataError, match=r"no gzds/corpus\.jsonl, gzds/queries\.jsonl, gzds/qrels/<split>\.tsv; it "
                                        r"holds gzds/corpus\.jsonl\.gz, gzds/queries\.jsonl\.gz, "
                                        r"gzds/qrels/test\.tsv\.gz gzip-compressed"):
        load_beir(archive)


def test_a_complete_archive_with_gzipped_copies_beside_loads(tmp_path, monkeypatch):
    """``.gz`` members beside the plain files are left in the archive, unnamed: nothing is missing."""
    monkeypatch.setenv("RAGKIT_CACHE", str(tmp_path / "cache"))
    buf = io.BytesIO()
    root = _write(tmp_path / "both")
    with zipfile.ZipFile(buf, "w") as z:
        for f in ("corpus.jsonl", "queries.jsonl", "qrels/test.tsv"):
            z.write(root / f, f"both/{f}")
            z.writestr(f"both/{f}.gz", gzip.compress((root / f).read_bytes()))
    (tmp_path / "both.zip").write_bytes(buf.getvalue())
    data = load_beir(tmp_path / "both.zip")
    assert len(data.corpus) == len(CORPUS)
    assert not list(data.path.rglob("*.gz"))


@enable_socket
def test_a_mirror_archive_of_gzipped_files_names_them(mirror, tmp_path):  # noqa: F811
    www, url, requests, _ = mirror
    (www / "gzds.zip").write_bytes(_gz_zip("gzds"))
    with pytest.raises(DataError, match=rf"{url}/gzds\.zip: {GZ_NAMED}"):
        download_beir("gzds", base_url=url)
    assert not (tmp_path / "cache" / "beir" / "gzds").exists()


# ---------------------------------------------------------------------- 2. a BEIR name in other letters
@enable_socket
def test_a_beir_name_in_other_letters_loads_the_cached_lowercase_one_unfetched(mirror, tmp_path, caplog):  # noqa: F811
    www, url, requests, _ = mirror
    cache = tmp_path / "cache" / "beir"
    _write(cache / "nfcorpus")
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        assert load_beir("NFCorpus", base_url=url).path == cache / "nfcorpus"
    assert requests == []
    assert f"'NFCorpus': no folder of that name; BEIR's dataset names are lowercase: loaded 'nfcorpus' " \
           f"({cache / 'nfcorpus'})" in caplog.text


def test_a_beir_name_in_other_letters_loads_the_lowercase_folder_of_beir_dir(tmp_path, monkeypatch):
    import ragkit.eval.beir as beir

    monkeypatch.setenv("RAGKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("RAGKIT_BEIR_DIR", str(tmp_path / "mine"))
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    _write(tmp_path / "mine" / "scifact")
    fetched: list[str] = []
    monkeypatch.setattr(beir, "download_beir", lambda name, **kw: fetched.append(name) or tmp_path / "x")
    assert load_beir("SciFact").path == tmp_path / "mine" / "scifact"
    _write(tmp_path / "mine" / "SciFact")  # a folder of the name given is the user's: it comes first
    (tmp_path / "mine" / "SciFact" / "corpus.jsonl").write_text(json.dumps(CORPUS[0]) + "\n")
    if not (tmp_path / "mine" / "SCIFACT").exists():  # (a file system that tells letter case apart)
        assert len(load_beir("SciFact").corpus) == 1
    assert fetched == []


@enable_socket
def test_a_beir_name_in_other_letters_downloads_the_lowercase_archive(mirror, tmp_path):  # noqa: F811
    www, url, requests, _ = mirror
    buf = io.BytesIO()
    root = _write(tmp_path / "src" / "scifact")
    with zipfile.ZipFile(buf, "w") as z:
        for f in ("corpus.jsonl", "queries.jsonl", "qrels/test.tsv"):
            z.write(root / f, f"scifact/{f}")
    (www / "scifact.zip").write_bytes(buf.getvalue())
    assert load_beir("SciFact", base_url=url).path == tmp_path / "cache" / "beir" / "scifact"
    assert requests == ["/scifact.zip"]


@enable_socket
def test_a_name_close_to_a_cached_one_but_for_letter_case_is_hinted_after_a_404(mirror, tmp_path):  # noqa: F811
    """A name BEIR does not distribute: asked of the server (a mirror may have it); its 404 names the cached one,
    letter case aside."""
    www, url, requests, _ = mirror
    _write(tmp_path / "cache" / "beir" / "mydata")
    with pytest.raises(DataError, match=r"'MyData': not found locally .*HTTP Error 404.*; did you mean the cached "
                                        r"dataset 'mydata' \(.*cache/beir/mydata\)\?$"):
        load_beir("MyData", base_url=url)
    assert requests == ["/MyData.zip"]


def test_a_users_folder_in_other_letters_is_named_not_downloaded(tmp_path, monkeypatch):
    import ragkit.eval.beir as beir

    monkeypatch.setenv("RAGKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("RAGKIT_BEIR_DIR", raising=False)
    here = tmp_path / "a" / "b" / "c" / "d"
    here.mkdir(parents=True)
    monkeypatch.chdir(here)
    _write(here / "sf_small")
    fetched: list[str] = []
    monkeypatch.setattr(beir, "download_beir", lambda name, **kw: fetched.append(name) or here / "x")
    if (here / "SF_Small").exists():  # pragma: no cover (a file system blind to letter case finds it)
        pytest.skip("the file system does not tell letter case apart")
    with pytest.raises(DataError, match=r"'SF_Small': no folder or dataset of that name .*did you mean the folder "
                                        r"'.*/sf_small'\? \(nothing was downloaded\)"):
        load_beir("SF_Small")
    assert fetched == []
