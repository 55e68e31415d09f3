"""BEIR downloads from a mirror, review 2 (a local ``http.server`` as ``$RAGKIT_BEIR_URL``).

Review: with ``fiqa`` in the cache, ``--data fiqa2`` (on the mirror) was refused as a typo of the cached folder;
``--data fiqa.zip`` (no such file) fetched ``<base>/fiqa.zip.zip``; a transfer cut short without Content-Length
and an HTML page (status 200) were both "not a zip archive (N bytes)"; a cache folder holding corpus.jsonl only
was trusted ("queries.jsonl: file not found"); a timeout said only "timed out"; a redirect loop's message
spanned three lines.
"""

from __future__ import annotations

import importlib.util
import io
import json
import threading
import zipfile
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable

import pytest

from ragkit.errors import DataError, ParamError
from ragkit.eval import download_beir, load_beir

enable_socket = pytest.mark.enable_socket if importlib.util.find_spec("pytest_socket") else (lambda f: f)

CORPUS = [{"_id": f"d{i}", "title": "", "text": f"document {i} words"} for i in range(4)]
QUERIES = [{"_id": "q1", "text": "document words"}]
QRELS = "query-id\tcorpus-id\tscore\nq1\td1\t1\n"


def _write(root: Path, *, queries: bool = True, qrels: bool = True) -> Path:
    """A tiny BEIR folder at ``root`` (without queries.jsonl or qrels/ when told)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in CORPUS))
    if queries:
        (root / "queries.jsonl").write_text("".join(json.dumps(r) + "\n" for r in QUERIES))
    if qrels:
        (root / "qrels").mkdir(exist_ok=True)
        (root / "qrels" / "test.tsv").write_text(QRELS)
    return root


def _zip(name: str, subs: tuple[str, ...] = ()) -> bytes:
    """A BEIR archive ``<name>/...``, or ``<name>/<sub>/...`` per sub-dataset."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for prefix in [f"{name}/{s}/" for s in subs] or [f"{name}/"]:
            z.writestr(f"{prefix}corpus.jsonl", "".join(json.dumps(r) + "\n" for r in CORPUS))
            z.writestr(f"{prefix}queries.jsonl", "".join(json.dumps(r) + "\n" for r in QUERIES))
            z.writestr(f"{prefix}qrels/test.tsv", QRELS)
    return buf.getvalue()


@pytest.fixture
def mirror(tmp_path, monkeypatch):
    """A local HTTP server over ``tmp_path / "www"``, an empty cache, no ``$RAGKIT_BEIR_DIR``, the working folder
    ``tmp_path / "work"``.  Yields ``(www, url, requests, routes)``: ``routes`` maps a path to a function answering
    it (given the request handler) instead of the file; ``requests`` lists the paths asked for."""
    www = tmp_path / "www"
    www.mkdir()
    requests: list[str] = []
    routes: dict[str, Callable[[SimpleHTTPRequestHandler], None]] = {}

    class Handler(SimpleHTTPRequestHandler):
        def log_message(self, *a):  # noqa: D102
            pass

        def do_GET(self):  # noqa: N802, D102
            requests.append(self.path)
            if self.path in routes:
                routes[self.path](self)
                return
            super().do_GET()

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(www)))
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    monkeypatch.setenv("RAGKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("RAGKIT_BEIR_DIR", raising=False)
    monkeypatch.delenv("RAGKIT_BEIR_URL", raising=False)
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")  # (no shared/data/beir up to three folders above it)
    try:
        yield www, f"http://127.0.0.1:{httpd.server_address[1]}", requests, routes
    finally:
        httpd.shutdown()
        httpd.server_close()


def _cli(*args: object):
    from typer.testing import CliRunner

    from ragkit.cli import app

    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})


# ---------------------------------------------------------------------- 1. a close name among the cached downloads
@enable_socket
def test_a_cached_dataset_with_a_close_name_does_not_block_a_download(mirror, tmp_path, monkeypatch):
    """The typo check guards a user's own folders (``sf_smal`` for ``./sf_small``: nothing is downloaded); the
    cache's folders are ragkit's downloads, and ``fiqa2`` beside a cached ``fiqa`` is asked of the server, whose
    404 is the check (and then names the cached one)."""
    www, url, requests, _ = mirror
    cache = tmp_path / "cache" / "beir"
    _write(cache / "fiqa")
    (www / "fiqa2.zip").write_bytes(_zip("fiqa2"))
    assert load_beir("fiqa2", base_url=url).path == cache / "fiqa2"
    assert requests == ["/fiqa2.zip"]
    with pytest.raises(DataError, match=r"'fiqa3': not found locally \(looked in .*\); could not download BEIR "
                                        r"dataset 'fiqa3' from .*/fiqa3\.zip: HTTP Error 404.*; did you mean the "
                                        r"cached dataset 'fiqa2?' \(.*cache/beir/fiqa2?\)\?$"):
        load_beir("fiqa3", base_url=url)
    monkeypatch.setenv("RAGKIT_BEIR_URL", url)
    (www / "fiqa4.zip").write_bytes(_zip("fiqa4"))
    res = _cli("eval", "--data", "fiqa4", "-p", "bm25")
    assert res.exit_code == 0, res.output
    assert (cache / "fiqa4" / "queries.jsonl").is_file()
    # a user's own folder ($RAGKIT_BEIR_DIR, the working folder) with a close name still stops a typo, unfetched
    _write(tmp_path / "mine" / "nfcorp_small")
    monkeypatch.setenv("RAGKIT_BEIR_DIR", str(tmp_path / "mine"))
    del requests[:]
    with pytest.raises(DataError, match=r"'nfcorp_smal': no folder or dataset of that name .*did you mean the folder "
                                        r"'.*mine/nfcorp_small'\? \(nothing was downloaded\)"):
        load_beir("nfcorp_smal", base_url=url)
    assert requests == []


# ---------------------------------------------------------------------- 2. a name ending in .zip is a file
@enable_socket
def test_a_missing_local_zip_is_file_not_found_not_a_download(mirror, tmp_path):
    www, url, requests, _ = mirror
    (www / "fiqa.zip").write_bytes(_zip("fiqa"))
    (www / "fiqa.zip.zip").write_bytes(_zip("fiqa"))  # (what the old code fetched)
    work = tmp_path / "work"
    with pytest.raises(DataError, match=rf"^fiqa\.zip: file not found \({work}/fiqa\.zip does not exist\); a name "
                                        r"ending in \.zip is a local BEIR zip archive's path; to download a dataset, "
                                        r"give its name without \.zip \('fiqa'\)$"):
        load_beir("fiqa.zip", base_url=url)
    with pytest.raises(DataError, match=rf"^cqadupstack\.ZIP/android: file not found \({work}/cqadupstack\.ZIP does "
                                        r"not exist\)"):
        load_beir("cqadupstack.ZIP/android", base_url=url)
    with pytest.raises(ParamError, match=r"download_beir: name 'fiqa\.zip' ends in \.zip; expected the dataset's "
                                         r"name without it \('fiqa'\)"):
        download_beir("fiqa.zip", base_url=url)
    assert requests == []
    (work / "fiqa.zip").write_bytes(_zip("fiqa"))  # a local zip that is there is unpacked, as before
    assert len(load_beir("fiqa.zip").corpus) == len(CORPUS)


# ---------------------------------------------------------------------- 3, 4. what came instead of a zip
def _send(body: bytes, ctype: str, *, length: bool, cut: bool = False) -> Callable[[SimpleHTTPRequestHandler], None]:
    """A route answering 200 with ``body`` (its first half when ``cut``, then closing), with or without a
    Content-Length."""
    def answer(h: SimpleHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Type", ctype)
        if length:
            h.send_header("Content-Length", str(len(body)))
        else:
            h.close_connection = True  # (HTTP/1.0: the body ends when the connection closes)
        h.end_headers()
        h.wfile.write(body[:len(body) // 2] if cut else body)
    return answer


@enable_socket
def test_not_a_zip_says_what_came_instead(mirror, tmp_path):
    www, url, _, routes = mirror
    data = _zip("cut")
    routes["/cut.zip"] = _send(data, "application/zip", length=False, cut=True)
    with pytest.raises(DataError, match=rf"^{url}/cut\.zip: not a zip archive \({len(data) // 2} bytes\); Content-Type "
                                        r"'application/zip'; it begins as one, but its end is missing or damaged; the "
                                        r"server sent no Content-Length, so the transfer may have been cut short; "
                                        r"expected a BEIR zip archive; nothing was cached"):
        download_beir("cut", base_url=url)
    page = b"<!DOCTYPE html>\n<html>\n  <head><title>Sign in to the network</title></head>" + b" " * 2000
    routes["/login.zip"] = _send(page, "text/html; charset=utf-8", length=True)
    with pytest.raises(DataError, match=rf"^{url}/login\.zip: not a zip archive \({len(page)} bytes\); Content-Type "
                                        r"'text/html; charset=utf-8'; it begins '<!DOCTYPE html> <html> <head><title>"
                                        r"Sign in to the network</title>.*' \(a web page: a login or captive portal, "
                                        r"or an error page\?\); expected a BEIR zip archive; nothing was cached"):
        download_beir("login", base_url=url)
    routes["/binary.zip"] = _send(bytes(range(256)) * 4, "application/octet-stream", length=True)
    with pytest.raises(DataError, match=rf"^{url}/binary\.zip: not a zip archive \(1024 bytes\); Content-Type "
                                        r"'application/octet-stream'; expected a BEIR zip archive"):
        download_beir("binary", base_url=url)
    assert sorted(p.name for p in (tmp_path / "cache" / "beir").iterdir()) == []


# ---------------------------------------------------------------------- 6. an incomplete folder in the cache
@enable_socket
def test_an_incomplete_cached_download_is_downloaded_again(mirror, tmp_path):
    www, url, requests, _ = mirror
    cache = tmp_path / "cache" / "beir"
    _write(cache / "fiqa", queries=False, qrels=False)  # an earlier download cut short, or a partial copy
    (www / "fiqa.zip").write_bytes(_zip("fiqa"))
    ds = load_beir("fiqa", base_url=url)
    assert ds.path == cache / "fiqa" and ds.qrels("test") == {"q1": {"d1": 1}} and requests == ["/fiqa.zip"]
    assert sorted(p.name for p in cache.iterdir()) == ["fiqa"]  # replaced in place, nothing left beside it
    # one forum of a cached archive of several, incomplete: the archive is downloaded again
    _write(cache / "cq" / "android", qrels=False)
    (www / "cq.zip").write_bytes(_zip("cq", subs=("android", "gaming")))
    assert load_beir("cq/android", base_url=url).qrels("test") == {"q1": {"d1": 1}}
    assert (cache / "cq" / "gaming" / "qrels" / "test.tsv").is_file()
    # nothing to download it from: the error names what the cached folder lacks; without download, the file
    _write(cache / "gone", queries=False)
    with pytest.raises(DataError, match=r"'gone': not found locally \(looked in .*cache/beir/gone \(incomplete: no "
                                        r"queries\.jsonl\).*HTTP Error 404: File not found$"):
        load_beir("gone", base_url=url)
    with pytest.raises(DataError, match=r"cache/beir/gone/queries\.jsonl: file not found"):
        load_beir("gone", download=False)
    # a user's own folder (not in the cache) is never replaced: the file it lacks is named
    _write(tmp_path / "work" / "mine", queries=False)
    del requests[:]
    with pytest.raises(DataError, match=r"^mine/queries\.jsonl: file not found"):
        load_beir("mine", base_url=url)
    assert requests == []


# ---------------------------------------------------------------------- 7. timeouts and progress
@enable_socket
def test_a_timeout_says_the_limit_and_how_to_raise_it(mirror):
    www, url, _, routes = mirror
    release = threading.Event()

    def stall(h: SimpleHTTPRequestHandler) -> None:
        release.wait(30)  # (answers nothing until the test is done)

    routes["/slow.zip"] = stall
    try:
        with pytest.raises(DataError) as err:
            download_beir("slow", base_url=url, timeout=0.25)
    finally:
        release.set()
    assert str(err.value) == (f"could not download BEIR dataset 'slow' from {url}/slow.zip: timed out: nothing came "
                              "for 0.25 seconds (download_beir's timeout, per network read); raise it with "
                              "ragkit.eval.download_beir('slow', timeout=<seconds>), which caches the dataset for "
                              "later loads")


class _Terminal(io.StringIO):
    def isatty(self) -> bool:  # noqa: D102
        return True


@enable_socket
def test_a_progress_bar_on_a_terminal_only(mirror, tmp_path, monkeypatch, capsys):
    www, url, _, routes = mirror
    data = _zip("sf")
    (www / "sf.zip").write_bytes(data)
    download_beir("sf", base_url=url, dest=tmp_path / "plain")
    assert "%|" not in capsys.readouterr().err  # not a terminal: no bar
    term = _Terminal()
    monkeypatch.setattr("sys.stderr", term)
    download_beir("sf", base_url=url, dest=tmp_path / "tty")
    shown = term.getvalue()
    assert f"downloading sf: 100%|##########| {len(data)}/{len(data)}" in shown, shown
    routes["/nolen.zip"] = _send(_zip("nolen"), "application/zip", length=False)
    term.seek(0)
    term.truncate()
    download_beir("nolen", base_url=url, dest=tmp_path / "tty")
    assert "downloading nolen: " in term.getvalue() and "%" not in term.getvalue()  # (no size: no share of it)


# ---------------------------------------------------------------------- 8. one line
@enable_socket
def test_a_redirect_loop_is_one_line(mirror):
    www, url, _, routes = mirror

    def loop(h: SimpleHTTPRequestHandler) -> None:
        h.send_response(302)
        h.send_header("Location", "/loop.zip")
        h.send_header("Content-Length", "0")
        h.end_headers()

    routes["/loop.zip"] = loop
    with pytest.raises(DataError) as err:
        download_beir("loop", base_url=url)
    assert "\n" not in str(err.value) and "redirect error that would lead to an infinite loop. The last 30x error " \
                                          "message was: Found" in str(err.value), str(err.value)
