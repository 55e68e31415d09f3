"""BEIR archives into the cache: a download by name (the HTTP transfer, its checks, its publishing into place)
and a local zip's unpacking, both checked before anything is written."""

from __future__ import annotations

import hashlib
import logging
import lzma
import os
import re
import shutil
import sys
import zipfile
import zlib
from pathlib import Path
from typing import Any

from ragkit._files import (
    remove_stale_tempdirs,
    share_like_umask,
    shared_tempdir,
    user_path,
)
from ragkit.errors import DataError, ParamError
from ragkit.eval._layout import _NAME, _folders, _is_dataset, _lacks, _subsets

_log = logging.getLogger("ragkit.eval.beir")  # (the logger it used before the split)


BEIR_URL = "https://public.ukp.informatik.tu-darmstadt.de/thakur/BEIR/datasets"


def _base_url(base_url: str | None) -> str:
    """Where archives are downloaded from, without a trailing ``/``: ``base_url`` when given, else
    ``$RAGKIT_BEIR_URL`` when set, else BEIR's own server (:data:`BEIR_URL`)."""
    return (base_url or os.environ.get("RAGKIT_BEIR_URL") or BEIR_URL).rstrip("/")


def _beirs_own(base_url: str | None) -> bool:
    """Whether the archives come from BEIR's own server (:func:`_base_url`), which holds BEIR's datasets alone."""
    return _base_url(base_url) == BEIR_URL.rstrip("/")


class DownloadError(DataError):
    """A BEIR archive's download that failed: the server could not be reached or refused it, the transfer was
    cut short, or what came is no zip archive or a damaged one.  A :class:`DataError` (as before), told apart
    so that ``ragkit`` exits 1 on it (a failure while running, worth trying again), not 2 (bad input).
    ``missing`` is true when the server answered that it has no such archive (HTTP 404, no such file)."""

    missing: bool = False


def cache_dir() -> Path:
    """ragkit's cache folder: ``$RAGKIT_CACHE`` (a leading ``~`` is the home folder) or, where it is unset or empty
    (``RAGKIT_CACHE=``: the working folder before), ``~/.cache/ragkit``."""
    return Path(os.path.expanduser(os.environ.get("RAGKIT_CACHE") or "~/.cache/ragkit"))


def download_beir(name: str, *, base_url: str | None = None, dest: Path | None = None, timeout: float = 60) -> Path:
    """Download ``{base_url}/{name}.zip`` and unzip it into ``dest`` (default: the cache); returns ``dest / name``.

    The archive is unpacked in a temporary folder of ``dest`` and renamed into place, so an
    interrupted download leaves nothing half-written; the folder of a process killed midway is removed
    by the next download into ``dest`` (or load by name, for the cache) on this host.  A folder of that
    name that another process's download of the same archive filled meanwhile is kept as it is (it may
    be in use); an incomplete or damaged earlier download (a file missing, or differing from the archive's) is
    replaced.  An archive of several datasets
    (``cqadupstack/<forum>/corpus.jsonl``, ...) is cached whole as ``dest / name / <forum>``,
    once every one of its folders is checked to be a complete BEIR dataset.

    ``timeout`` is the most seconds to wait for the server to answer and for each piece of the archive
    (not for the whole download): a slow or distant server may need more than the default 60; load_beir
    and ``ragkit eval --data`` download with the default, so download a dataset they time out on with a
    larger one first (it is then found in the cache).  A progress bar goes to stderr when it is a terminal.
    ``name`` is the dataset's name without ``.zip`` (``"fiqa"``; load a local zip with :func:`load_beir`).
    """
    if not isinstance(name, str) or not re.fullmatch(_NAME, name) or ".." in name:
        raise ParamError(f"download_beir: name {name!r} is not a dataset name; expected a name such as 'scifact' "
                         "(letters, digits, '-', '_', '.'; no '/', '\\' or '..': the archive <name>.zip is "
                         "unpacked into dest/<name>, never elsewhere)")
    if name.lower().endswith(".zip"):  # (else <base>/fiqa.zip.zip was fetched)
        raise ParamError(f"download_beir: name {name!r} ends in .zip; expected the dataset's name without it "
                         f"({name[:-4]!r}): the archive <name>.zip is fetched; a local zip is loaded with "
                         f"load_beir({name!r})")
    base = _base_url(base_url)
    dest = user_path(dest, "download_beir: dest") if dest is not None else cache_dir() / "beir"
    _refuse_not_a_download(dest / name, name)  # before fetching what may be gigabytes
    dest.mkdir(parents=True, exist_ok=True)
    url = f"{base}/{name}.zip"
    # the archive and its contents, in a folder named after this process (shared_tempdir): removed whatever
    # happens here, and by the next download or load of a dataset in dest when this process is killed
    tmp = shared_tempdir(dest, _DOWNLOAD_PREFIX)
    try:
        with _fetch_zip(url, name, timeout, tmp / "archive.zip") as archive:
            gzipped = _extract(archive, tmp / "unpacked", url, again="nothing was cached; download it again",
                               damaged=DownloadError)
        (tmp / "archive.zip").unlink()  # (the archive's bytes twice on disk no longer than needed)
        root = _archive_root(tmp / "unpacked", name)
        # the whole BEIR layout, checked before the folder moves into the cache: a partial one placed
        # there would be found by every later load_beir (which looks for corpus.jsonl) and never replaced
        _check_layout(root, name, url, gzipped)
        share_like_umask(root)  # (the permissions of a plain mkdir, whatever zipfile gave it)
        final = dest / name
        _publish_download(root, final, name, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


#: the name of download_beir's temporary folders begins so (then :func:`~ragkit._files.owner_tag`)
_DOWNLOAD_PREFIX = ".beir-download-"


def _publish_download(root: Path, final: Path, name: str, tmp: Path) -> None:
    """Rename the checked, unpacked archive ``root`` (in ``tmp``, a folder beside ``final``) to ``final``, never
    into it (a move into a folder there meanwhile nested the dataset: ``<name>/<name>/corpus.jsonl``).
    A ``final`` that holds exactly what ``root`` holds, byte for byte (another process downloaded the same
    archive meanwhile, and may be reading it), is kept and ``root`` dropped; an incomplete or damaged earlier
    download of it (a file missing, or differing in content) is first renamed into ``tmp`` (removed with it),
    never deleted where a reader may be; anything else is
    refused (:func:`_not_a_download`)."""
    for attempt in range(3):
        if final.exists() or final.is_symlink():
            if not _is_download_of(final, root):
                raise _not_a_download(final, name)
            if _holds_all_of(final, root):
                _log.info(f"{final}: already holds the BEIR download of {name!r} (an earlier one, or another "
                          "process's done meanwhile, perhaps in use): kept; the new download is dropped")
                return
            try:
                os.rename(final, tmp / f"replaced-{attempt}")  # an incomplete download: replaced
            except FileNotFoundError:
                pass
        try:
            os.replace(root, final)  # (onto a folder that is there, not empty: an OSError, never a move into it)
            return
        except OSError:
            if attempt == 2 or not (final.exists() or final.is_symlink()):
                raise
            # another process published it between the check and the rename: judged again


def _holds_all_of(final: Path, root: Path) -> bool:
    """Whether the folder ``final`` holds every file of ``root``, at every depth, each with the same bytes
    (compared in full, sizes first: a damaged copy of the same size is no copy, and is replaced)."""
    import filecmp

    filecmp.clear_cache()  # (its cache is keyed by size and mtime: a file rewritten within one tick would match)
    for here, _dirs, files in os.walk(root):
        there = final / Path(here).relative_to(root)
        for f in files:
            try:
                if os.stat(there / f).st_size != os.stat(Path(here) / f).st_size or \
                        not filecmp.cmp(there / f, Path(here) / f, shallow=False):
                    return False
            except OSError:
                return False
    return True


def _fetch_zip(url: str, name: str, timeout: float, into: Path) -> zipfile.ZipFile:
    """The zip archive at ``url``, streamed to the file ``into`` in 1 MiB pieces (BEIR archives reach
    gigabytes: never held in memory whole) and opened; ``timeout`` in seconds, per network read.  A progress
    bar goes to stderr when it is a terminal (:func:`_copy`)."""
    import urllib.request  # imported on use: ~35 ms of `import ragkit` otherwise

    _log.info(f"{'copying' if url.startswith('file:') else 'downloading'} {url} into {into.parent.parent}")
    length = ctype = None
    size: int | None = None  # the Content-Length, when the server sent a number
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp, open(into, "wb") as f:
            length, ctype = resp.headers.get("Content-Length"), resp.headers.get("Content-Type")
            size = int(length) if length is not None and length.strip().isdigit() else None
            _copy(resp, f, name, size)
    except Exception as e:  # URLError, HTTPError, timeouts, a connection cut short, a full disk
        err = DownloadError(f"could not download BEIR dataset {name!r} from {url}: {_why(e, name, timeout)}")
        reason = getattr(e, "reason", None)
        err.missing = getattr(e, "code", None) in (404, 410) or isinstance(reason, FileNotFoundError)
        raise err from None
    got = into.stat().st_size
    if size is not None and got < size:  # the server closed early
        raise DownloadError(f"{url}: download cut short: {got} of {size} bytes; nothing was cached; try again")
    try:
        return zipfile.ZipFile(into)
    except (zipfile.BadZipFile, EOFError, ValueError):
        raise DownloadError(_not_a_zip(url, into, ctype, sized=length is not None)) from None


def _copy(resp: Any, f: Any, name: str, total: int | None) -> None:
    """Copy the response ``resp`` into the file ``f`` in 1 MiB pieces, with a tqdm progress bar on stderr when
    stderr is a terminal (of ``total`` bytes, the Content-Length, when the server sent one); none otherwise
    (a log, a pipe, a job's output)."""
    try:
        tty = sys.stderr is not None and sys.stderr.isatty()
    except (AttributeError, ValueError):  # (a replaced or closed stderr)
        tty = False
    bar = None
    if tty:
        from tqdm import tqdm

        bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=f"downloading {name}",
                   file=sys.stderr)
    try:
        while chunk := resp.read(1 << 20):
            f.write(chunk)
            if bar is not None:
                bar.update(len(chunk))
    finally:
        if bar is not None:
            bar.close()


def _why(e: BaseException, name: str, timeout: float) -> str:
    """Why a download failed, on one line (urllib's reasons may span several: a redirect loop's); a timeout says
    the limit and how to raise it."""
    if isinstance(e, TimeoutError) or isinstance(getattr(e, "reason", None), TimeoutError):
        return (f"timed out: nothing came for {timeout:g} seconds (download_beir's timeout, per network read); "
                f"raise it with ragkit.eval.download_beir({name!r}, timeout=<seconds>), which caches the dataset "
                "for later loads")
    return " ".join(str(e).split())


def _not_a_zip(url: str, into: Path, ctype: str | None, *, sized: bool) -> str:
    """The message for a download ``into`` that is no zip archive: its size, the response's Content-Type, its first
    bytes when they are text (a web page: a login, captive portal or error page) or that it begins as a zip
    (cut short, or damaged), and, when the server sent no Content-Length (``sized``), that the transfer may have
    been cut short."""
    got = into.stat().st_size
    with open(into, "rb") as f:
        head = f.read(256)
    said = [f"{url}: not a zip archive ({got} bytes); Content-Type {ctype!r}" if ctype else
            f"{url}: not a zip archive ({got} bytes); no Content-Type"]
    text = _text_of(head)
    if got == 0:
        said.append("it is empty")
    elif head.startswith(b"PK"):
        said.append("it begins as one, but its end is missing or damaged")
    elif text is not None:
        page = text.lower().startswith(("<!doctype html", "<html")) or "html" in (ctype or "").lower()
        said.append(f"it begins {text[:80]!r}" + (" (a web page: a login or captive portal, or an error page?)"
                                                  if page else ""))
    if not sized:
        said.append("the server sent no Content-Length, so the transfer may have been cut short")
    return "; ".join(said) + "; expected a BEIR zip archive; nothing was cached; try again, or check the URL"


def _text_of(head: bytes) -> str | None:
    """``head`` (a file's first bytes) as text on one line when it reads as UTF-8 text (a character cut at its
    end allowed), else ``None``."""
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as e:
        if e.start < len(head) - 3:
            return None
        text = head[:e.start].decode("utf-8")
    if any(c < " " and c not in "\t\n\r\f" for c in text):
        return None
    return " ".join(text.split())


#: What a damaged zip raises while it is read: a bad CRC or a truncated member (BadZipFile, EOFError), a
#: damaged deflate or lzma stream (zlib.error, lzma.LZMAError), a compression method zipfile cannot read
#: (NotImplementedError); a damaged bzip2 stream is an OSError without an errno (told apart from a full disk)
_DAMAGED_ZIP = (zipfile.BadZipFile, zlib.error, lzma.LZMAError, EOFError, NotImplementedError, ValueError, OSError)


#: What :func:`_extract` unpacks at most, in bytes as the archive declares them, unless
#: ``$RAGKIT_BEIR_MAX_UNZIPPED`` says otherwise: 64 GiB, over ten times BEIR's largest datasets (MS MARCO,
#: FEVER and Climate-FEVER, millions of documents: a few GB of JSON lines each, from archives of 1-4 GB)
MAX_UNZIPPED = 64 << 30
#: A member that unpacks to more than :data:`_BOMB_RATIO` times its compressed size, and to more than
#: :data:`_BOMB_MIN` bytes, is refused: BEIR's JSON lines and TSVs compress about 3 to 4 times, and deflate
#: at most about 1,000 times (a "zip bomb" of repeated bytes)
_BOMB_RATIO = 100
_BOMB_MIN = 64 << 20
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def max_unzipped() -> int:
    """The most bytes an archive may unpack to (:data:`MAX_UNZIPPED`, or ``$RAGKIT_BEIR_MAX_UNZIPPED``: a number
    of bytes, or one with a K, M, G or T suffix, powers of 1024: ``200G``)."""
    text = os.environ.get("RAGKIT_BEIR_MAX_UNZIPPED", "").strip()
    if not text:
        return MAX_UNZIPPED
    m = re.fullmatch(r"(\d+)\s*([KMGT]?)(?:i?B)?", text, re.IGNORECASE)
    if m is None or int(m[1]) == 0:
        raise ParamError(f"RAGKIT_BEIR_MAX_UNZIPPED={text!r}: expected a positive number of bytes, or one with a "
                         "K, M, G or T suffix (powers of 1024), such as 200G", "RAGKIT_BEIR_MAX_UNZIPPED")
    return int(m[1]) * _UNITS[m[2].upper()]


def _is_dataset_member(name: str) -> bool:
    """Whether the archive member ``name`` is a file of the BEIR layout: ``corpus.jsonl``, ``queries.jsonl`` or
    ``qrels/<split>.tsv``, at the archive's top, in its top folder (``scifact/``) or in a dataset folder of an
    archive of several (``cqadupstack/android/``); hidden files and macOS's ``__MACOSX`` are none."""
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if not parts or name.endswith("/") or any(p.startswith(".") or p == "__MACOSX" for p in parts):
        return False
    if parts[-1] in ("corpus.jsonl", "queries.jsonl"):
        return len(parts) <= 3
    return len(parts) >= 2 and parts[-2] == "qrels" and parts[-1].endswith(".tsv") and len(parts) <= 4


def _gzipped_members(names: list[str]) -> list[str]:
    """The members of an archive (``names``) that are BEIR files gzip-compressed (``corpus.jsonl.gz``,
    ``qrels/test.tsv.gz``, as Hugging Face's BeIR copies hold them): left in the archive, as BEIR reads its files
    uncompressed, and named when the files they stand for are missing (:func:`_check_layout`)."""
    return [n for n in names if n.endswith(".gz") and _is_dataset_member(n[:-3])]


def _fmt_bytes(n: int) -> str:
    """``n`` bytes for a message: GiB to one decimal from 1 GiB up, MiB below (``"1.5 GiB"``, ``"0.3 MiB"``)."""
    return f"{n / (1 << 30):.1f} GiB" if n >= 1 << 30 else f"{n / (1 << 20):.1f} MiB"


def _extract(archive: zipfile.ZipFile, tmp: Path, url: str, *, again: str,
             damaged: type[DataError] = DataError) -> list[str]:
    """Unzip the BEIR files of ``archive`` (:func:`_is_dataset_member`; anything else it holds is left in it)
    into the folder ``tmp``, refusing it whole when a member would land outside, or before anything is
    written when those files would unpack to more than :func:`max_unzipped` bytes, or one of them to over
    :data:`_BOMB_RATIO` times its compressed size (a zip bomb).  zipfile writes no more than a member's
    declared size (and checks its CRC), so the declared sizes bound what lands on disk.  A damaged archive
    (a bad CRC, a broken compressed stream) is a ``damaged`` error (a :class:`DataError`; a
    :class:`DownloadError` for a download) naming ``url`` (the URL or file) and saying ``again`` (what to do).
    Returns the gzip-compressed BEIR files it left in the archive (:func:`_gzipped_members`), for
    :func:`_check_layout` to name."""
    inside = tmp.resolve()
    for member in archive.namelist():
        if not (inside / member).resolve().is_relative_to(inside):
            raise DataError(f"{url}: archive member {member!r} escapes the target folder")
    members = [m for m in archive.infolist() if _is_dataset_member(m.filename)]
    total, cap = sum(m.file_size for m in members), max_unzipped()
    if total > cap:
        raise DataError(f"{url}: its BEIR files would unpack to {_fmt_bytes(total)} ({total:,} bytes), over the "
                        f"limit of {_fmt_bytes(cap)}; BEIR's largest datasets unpack to a few GB; if the archive is "
                        "trusted, raise the limit with RAGKIT_BEIR_MAX_UNZIPPED (bytes, or e.g. 200G); nothing was "
                        "unpacked")
    packed = sum(m.compress_size for m in members)
    for what, size, small in [*((repr(m.filename), m.file_size, m.compress_size) for m in members),
                              ("its BEIR files", total, packed)]:
        if size > _BOMB_MIN and size > _BOMB_RATIO * max(small, 1):  # (one member, then all of them together)
            raise DataError(f"{url}: {what if what.startswith('its') else 'archive member ' + what} would unpack to "
                            f"{_fmt_bytes(size)} from {small:,} bytes ({size / max(small, 1):,.0f} times; BEIR's "
                            "files compress about 3 times, a zip bomb hundreds of times); expected a BEIR archive; "
                            "nothing was unpacked")
    try:
        archive.extractall(tmp, members=members)
    except _DAMAGED_ZIP as e:
        if isinstance(e, OSError) and e.errno is not None:  # a full disk, a permission: not the archive's fault
            raise
        raise damaged(f"{url}: the zip archive is damaged ({type(e).__name__}: {' '.join(str(e).split())}); "
                      f"{again}") from None
    tmp.mkdir(parents=True, exist_ok=True)  # (an archive without a BEIR file: its layout check says what it lacks)
    return _gzipped_members(archive.namelist())


def _not_a_download(final: Path, name: str) -> DataError:
    return DataError(f"{final}: exists and is not a BEIR download of {name!r} (it holds other files, or is not a "
                     "folder); refusing to replace it: move it, or pass another dest")


def _refuse_not_a_download(final: Path, name: str) -> None:
    """Refuse, before anything is fetched, a ``final`` that no BEIR archive could have left: a link, a file,
    or a folder holding at its top a file other than ``corpus.jsonl`` / ``queries.jsonl`` (an archive holds
    those, ``qrels/``, or dataset folders).  Whether a folder that passes is a download of the archive is
    checked once it is unpacked (:func:`_is_download_of`)."""
    if not (final.exists() or final.is_symlink()):
        return
    if final.is_symlink() or not final.is_dir():
        raise _not_a_download(final, name)
    loose = {e.name for e in os.scandir(final) if not e.is_dir(follow_symlinks=False)}
    if loose - {"corpus.jsonl", "queries.jsonl"}:
        raise _not_a_download(final, name)


def _check_layout(root: Path, name: str, url: str, gzipped: list[str] | None = None) -> None:
    """Refuse an unpacked archive that is neither a whole BEIR dataset nor a folder of whole ones: when
    ``root`` has no ``corpus.jsonl`` but one of its folders has, every folder must be a dataset (:func:`_lacks`).
    ``gzipped`` (:func:`_extract`'s result): the archive's gzip-compressed BEIR files, named with how to
    uncompress them when some file is missing."""
    lacks = _lacks(root)
    if not lacks:
        return
    missing = ", ".join(f"{name}/{f}" for f in lacks)
    gz = ""
    if gzipped:
        shown = ", ".join(gzipped[:6]) + (f" and {len(gzipped) - 6} more" if len(gzipped) > 6 else "")
        gz = (f"; it holds {shown} gzip-compressed instead (as Hugging Face's BeIR copies do), which are not read: "
              "BEIR files are read uncompressed: unzip the archive, gunzip those files (gunzip -r <its folder>), "
              "then load that folder, or zip it again")
    if not _subsets(root):
        raise DataError(f"{url}: the archive has no {missing}{gz}; expected a BEIR "
                        "dataset (corpus.jsonl, queries.jsonl, qrels/<split>.tsv); nothing was cached")
    raise DataError(f"{url}: the archive holds the sub-datasets {', '.join(_folders(root))}, but has no {missing}{gz}; "
                    "each must be a BEIR dataset (corpus.jsonl, queries.jsonl, qrels/<split>.tsv); nothing was "
                    "cached")


def _holds_only(folder: Path, names: set[str]) -> bool:
    """Whether ``folder`` is a folder (not a link) whose entries are all in ``names``."""
    return folder.is_dir() and not folder.is_symlink() and set(os.listdir(folder)) <= names


def _is_download_of(final: Path, root: Path) -> bool:
    """Whether ``final`` holds only what the unpacked archive ``root`` holds, at every depth (a
    multi-dataset archive's ``<sub>/qrels/`` is two levels down): an earlier download of it, perhaps
    incomplete, not a user's folder.  A folder that is a link is never one."""
    if not _holds_only(final, set(os.listdir(root))):
        return False
    for here, dirs, files in os.walk(final):
        rel = Path(here).relative_to(final)
        if any((Path(here) / d).is_symlink() or not (root / rel / d).is_dir() for d in dirs):
            return False
        if any(not (root / rel / f).is_file() for f in files):
            return False
    return True


def _unpacked(archive: Path) -> Path:
    """The folder a local BEIR zip (``scifact.zip``, as BEIR distributes them) unpacks to, under the cache
    (``beir-zip/<hash of its path, size and time>/<name>``; checked as a download is); unpacked once per
    version of the file.  ``<name>`` is the archive's one top folder (``nfcorpus`` of a browser's
    ``nfcorpus (1).zip``), or the zip's name when its files lie at the top."""
    st = archive.stat()
    # ("v2|": folders unpacked before renamed archives were understood are not reused)
    key = hashlib.sha1(f"v2|{archive.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:16]
    dest = cache_dir() / "beir-zip" / key
    done = _folders(dest) if dest.is_dir() else []
    if len(done) == 1:
        remove_stale_tempdirs(dest, _UNPACKING_PREFIX)  # (a process killed after its rename, before its clean-up)
        return dest / done[0]
    try:  # opened before its folder is made: a file that is no zip leaves no empty folder in the cache
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, EOFError, ValueError):
        raise DataError(f"{archive}: not a zip archive ({st.st_size} bytes)") from None
    with zf:
        dest.mkdir(parents=True, exist_ok=True)
        _log.info(f"unpacking {archive} into {dest}")
        try:
            final = _unpack_into(zf, archive, dest)
        except BaseException:
            try:  # a damaged archive, a layout refused: no empty beir-zip/<key>/ left (another process's result stays)
                dest.rmdir()
            except OSError:
                pass
            raise
    return final


def _unpack_into(zf: zipfile.ZipFile, archive: Path, dest: Path) -> Path:
    """Unpack the local zip ``archive`` (open as ``zf``) into ``dest / <its dataset's name>`` (:func:`_unpacked`)."""
    # hidden (never taken for the result) and named after this process (shared_tempdir): one a killed process
    # left is removed by the next unpacking or load of this zip
    tmp = shared_tempdir(dest, _UNPACKING_PREFIX)
    try:
        unpacked = tmp / "unpacked"
        gzipped = _extract(zf, unpacked, str(archive), again="nothing was unpacked; download the archive again (or "
                                                            "copy it again: it is damaged)")
        root = _archive_root(unpacked, archive.stem)
        name = archive.stem if root == unpacked else root.name
        _check_layout(root, name, str(archive), gzipped)
        share_like_umask(root)  # (the permissions of a plain mkdir, whatever zipfile gave it)
        final = dest / name
        try:
            os.rename(root, final)
        except OSError:
            if not (final / "corpus.jsonl").is_file() and not _subsets(final):
                raise  # (else another process unpacked the same zip at the same time: its folder serves)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


#: the name of a local zip's temporary unpacking folder begins so (then :func:`~ragkit._files.owner_tag`)
_UNPACKING_PREFIX = ".unpacking-"


def _archive_root(unpacked: Path, name: str) -> Path:
    """The folder of an unpacked BEIR archive that is the dataset (or the folder of datasets): its
    top folder ``name``; else ``unpacked`` itself when it holds a ``corpus.jsonl``; else its one top
    folder when that is a dataset or a folder of datasets (an archive renamed: ``nfcorpus (1).zip``,
    ``fiqa-v2.zip``); else ``unpacked`` (files at the top, or several datasets side by side)."""
    if (unpacked / name).is_dir():
        return unpacked / name
    if (unpacked / "corpus.jsonl").is_file():
        return unpacked
    tops = _folders(unpacked)
    loose = [p for p in unpacked.iterdir() if p.is_file() and not p.name.startswith(".")]
    if len(tops) == 1 and not loose and _is_dataset(unpacked / tops[0]):
        return unpacked / tops[0]
    return unpacked
