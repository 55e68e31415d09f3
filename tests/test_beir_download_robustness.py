"""BEIR downloads and local zips killed midway, and downloads of one dataset racing each other.

Review: a download (``$RAGKIT_BEIR_URL``) or a local zip's unpacking killed midway left its temporary folder
(the archive and its unpacked copy, gigabytes for msmarco) in the cache for good: a plain
``TemporaryDirectory``, which no later run removed.  Two downloads of one dataset deleted each other's folder
(one possibly in use) or nested it (``beir/sf/sf/corpus.jsonl``).
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

import ragkit.eval.beir as beir
from ragkit.eval import _download, download_beir, load_beir

REPO = Path(__file__).resolve().parents[1]
CORPUS = [{"_id": f"d{i}", "title": "", "text": f"document {i}"} for i in range(5)]
QUERIES = [{"_id": "q1", "text": "document"}]


def _zip(name: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr(f"{name}/corpus.jsonl", "".join(json.dumps(r) + "\n" for r in CORPUS))
        z.writestr(f"{name}/queries.jsonl", "".join(json.dumps(r) + "\n" for r in QUERIES))
        z.writestr(f"{name}/qrels/test.tsv", "query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    return buf.getvalue()


@pytest.fixture
def site(tmp_path, monkeypatch):
    """A folder served as ``$RAGKIT_BEIR_URL`` (a ``file://`` URL: no network) holding ``sf.zip``; an empty
    cache; the working folder with no ``shared/data/beir`` above it.  Yields ``(www, url, cache)``."""
    www = tmp_path / "www"
    www.mkdir()
    (www / "sf.zip").write_bytes(_zip("sf"))
    url = www.as_uri()
    monkeypatch.setenv("RAGKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("RAGKIT_BEIR_URL", url)
    monkeypatch.delenv("RAGKIT_BEIR_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    return www, url, tmp_path / "cache"


def _killed(script: str, *args: str) -> None:
    """Run ``script`` (after ``import ragkit.eval.beir as B``) in a new Python process, which must kill
    itself (``os._exit(9)``: no clean-up runs, as under ``kill -9`` or a preempted job)."""
    code = "import os, shutil, sys\nimport ragkit.eval.beir as B\n" + textwrap.dedent(script)
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    res = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 9, res.stderr


KILL_AFTER_EXTRACT = """
    import ragkit.eval._download as D
    orig = D._extract
    def extract(*a, **kw):
        orig(*a, **kw)
        os._exit(9)
    D._extract = extract
    B.load_beir(sys.argv[1])
"""


def test_a_download_killed_midway_leaves_nothing_after_the_next_run(site):
    www, url, cache = site
    _killed(KILL_AFTER_EXTRACT, "sf")
    left = os.listdir(cache / "beir")
    assert left and "sf" not in left  # the killed process's archive and unpacked copy
    ds = load_beir("sf")
    assert ds.path == cache / "beir" / "sf" and len(ds.corpus) == 5
    assert os.listdir(cache / "beir") == ["sf"]  # the killed download's folder was removed


def test_a_download_killed_after_its_rename_is_cleaned_by_the_next_load_that_downloads_nothing(site):
    """Killed once the dataset is in place, while its temporary folder (the archive) is being removed: the
    next load finds the dataset, downloads nothing, and still removes that folder."""
    www, url, cache = site
    _killed("""
        orig = shutil.rmtree
        def rmtree(path, *a, **kw):
            if os.path.dirname(os.path.abspath(path)) == os.path.join(os.environ["RAGKIT_CACHE"], "beir"):
                os._exit(9)
            return orig(path, *a, **kw)
        shutil.rmtree = rmtree
        B.load_beir(sys.argv[1])
    """, "sf")
    assert (cache / "beir" / "sf" / "corpus.jsonl").is_file() and len(os.listdir(cache / "beir")) == 2
    (www / "sf.zip").unlink()  # found in the cache: nothing is downloaded
    assert len(load_beir("sf").corpus) == 5
    assert os.listdir(cache / "beir") == ["sf"]


def test_a_live_downloads_folder_is_not_removed_by_a_load(site):
    """Another process's download in progress (its folder named after a live process: this one) stays."""
    from ragkit._files import shared_tempdir

    www, url, cache = site
    load_beir("sf")
    busy = shared_tempdir(cache / "beir", _download._DOWNLOAD_PREFIX)
    (busy / "archive.zip").write_bytes(b"partial")
    load_beir("sf")
    download_beir("sf")
    assert (busy / "archive.zip").read_bytes() == b"partial"


def test_a_local_zip_unpacking_killed_midway_leaves_nothing_after_the_next_run(site, tmp_path):
    archive = tmp_path / "sf.zip"
    archive.write_bytes(_zip("sf"))
    _killed(KILL_AFTER_EXTRACT, str(archive))
    (key,) = os.listdir(site[2] / "beir-zip")
    assert os.listdir(site[2] / "beir-zip" / key) != []  # the killed process's unpacked copy
    ds = load_beir(archive)
    assert len(ds.corpus) == 5 and ds.path == site[2] / "beir-zip" / key / "sf"
    assert os.listdir(site[2] / "beir-zip" / key) == ["sf"]


def _ids(folder: Path) -> tuple[int, int]:
    return os.stat(folder).st_ino, os.stat(folder / "corpus.jsonl").st_ino


def _race(monkeypatch, where: str, url: str):
    """Patch ``_download.<where>`` so that, the first time it is called, another download of ``sf`` (an earlier
    job) completes first; returns a list that receives that download's folder identity."""
    orig = getattr(_download, where)
    other: list = []

    def racing(*a, **kw):
        out = orig(*a, **kw)
        if not other:
            other.append(None)
            other[0] = _ids(download_beir("sf", base_url=url))
        return out

    monkeypatch.setattr(_download, where, racing)
    return other


@pytest.mark.parametrize("where", ["_check_layout", "share_like_umask"])
def test_a_download_finished_meanwhile_by_another_process_is_kept_not_deleted_or_nested(site, monkeypatch, where):
    """``_check_layout``: the other job's folder is there and complete when this one looks (it was deleted,
    perhaps in use, and this job's moved in); ``share_like_umask``: it appears after this job looked and
    before it moved its folder (which landed inside: ``sf/sf/corpus.jsonl``)."""
    www, url, cache = site
    other = _race(monkeypatch, where, url)
    got = download_beir("sf")
    final = cache / "beir" / "sf"
    assert got == final and other and other[0] is not None
    assert _ids(final) == other[0]  # the other job's folder, untouched
    assert sorted(os.listdir(final)) == ["corpus.jsonl", "qrels", "queries.jsonl"]  # nothing nested
    assert os.listdir(cache / "beir") == ["sf"]  # this job's copy dropped
    assert len(load_beir("sf").corpus) == 5


def test_a_download_published_between_the_check_and_the_rename_is_kept(site, monkeypatch):
    """The other job publishes in the last instant, as this one renames its folder into place."""
    www, url, cache = site
    final = cache / "beir" / "sf"
    other: list = []

    def wrap(real):
        def renaming(src, dst, *a, **kw):
            if not other and Path(dst) == final:
                other.append(None)
                other[0] = _ids(download_beir("sf", base_url=url))
            return real(src, dst, *a, **kw)
        return renaming

    monkeypatch.setattr(os, "rename", wrap(os.rename))
    monkeypatch.setattr(os, "replace", wrap(os.replace))
    assert download_beir("sf") == final
    assert other and _ids(final) == other[0]
    assert sorted(os.listdir(final)) == ["corpus.jsonl", "qrels", "queries.jsonl"]
    assert os.listdir(cache / "beir") == ["sf"]


def test_an_incomplete_earlier_download_is_replaced_and_a_users_folder_refused(site):
    www, url, cache = site
    final = download_beir("sf")
    (final / "queries.jsonl").unlink()  # an earlier download, incomplete
    assert download_beir("sf") == final and (final / "queries.jsonl").is_file()
    assert os.listdir(cache / "beir") == ["sf"]
    (final / "notes.txt").write_text("mine")
    with pytest.raises(beir.DataError, match=r"beir/sf: exists and is not a BEIR download of 'sf'"):
        download_beir("sf")
    assert (final / "notes.txt").read_text() == "mine"
