"""Atomic file writes: a temporary sibling renamed into place.

Every file ragkit saves (JSON, ``.npy`` arrays, run files, caches, index files) goes through
:func:`atomic_file`, so an interrupted write never leaves a truncated file where a good one
was, and two writers never share a temporary name.  A text output named as a character device or a pipe
(``/dev/stdout``, a shell's ``>(cmd)``) is written straight into instead (:func:`text_output`).
"""

from __future__ import annotations

import errno
import hashlib
import importlib
import importlib.util
import os
import re
import secrets
import stat
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, TextIO

from ragkit.errors import ArtifactError, DataError, InputTypeError

__all__ = ["atomic_file", "sha256_file", "folder_checksums", "verify_checksums", "saved_relpath", "check_inside",
           "utf8_line", "utf8_lines", "shared_tempdir", "private_tempdir", "remove_stale_tempdirs", "remove_tree",
           "share_like_umask", "share_file_like_umask", "user_path", "folder_lock", "remove_stale_tempfiles",
           "owner_tag", "owner_ended",
           "SAVE_ERRNOS", "save_unwritable", "GATE_FILES", "writes_through", "stdout_file", "descriptor_of",
           "text_output", "first_time",
           "shell_quote", "shell_join", "fsync_path", "fsync_tree"]

#: seconds a save waits for the loads of the folder it replaces to finish (then it replaces it anyway: those
#: loads notice and load again); a load waits as long for a save's swap, which holds the lock for microseconds
FOLDER_LOCK_WAIT_S = 60.0


def user_path(path: object, where: str) -> Path:
    """``path`` as a :class:`~pathlib.Path` with a leading ``~`` / ``~user`` expanded to the home folder
    (as a shell would: ``save("~/models/x")`` writes below the home folder, not into a folder named ``~``
    here; a ``~name`` naming no user stays as it is).  Anything but a ``str`` or an ``os.PathLike`` is an
    :class:`~ragkit.errors.InputTypeError` (a ``TypeError``) naming ``where`` (the argument, e.g.
    ``"Pipeline.load: path"``), instead of pathlib's "expected str, bytes or os.PathLike object"."""
    if not isinstance(path, (str, os.PathLike)):
        raise InputTypeError(f"{where}: expected a path (a str or pathlib.Path), got {type(path).__name__} "
                             f"{path!r:.80}")
    return Path(os.path.expanduser(os.fsdecode(os.fspath(path))))


#: guards every set :func:`first_time` marks (threads may open caches, read their files and log at once)
_FIRST_TIME_LOCK = threading.Lock()


def _cmd_shell() -> bool:
    """Whether the command lines ragkit suggests are for Windows (``cmd.exe``, whose programs split their command
    line by the C runtime's rules) rather than a POSIX shell."""
    return os.name == "nt"


def shell_quote(arg: str) -> str:
    """``arg`` quoted as one argument of a command line ragkit suggests in a message: for a POSIX shell
    (:func:`shlex.quote`), or on Windows by the rules its programs split their command line by
    (:func:`subprocess.list2cmdline`; ``'...'`` is no quoting there)."""
    if _cmd_shell():
        import subprocess

        return subprocess.list2cmdline([arg])
    import shlex

    return shlex.quote(arg)


def shell_join(args: Iterable[str]) -> str:
    """``args`` as one command line, each quoted by :func:`shell_quote`."""
    return " ".join(map(shell_quote, args))


def first_time(noted: set[Any], key: object, *, limit: int | None = None) -> bool:
    """Whether ``key`` comes up for the first time in this process (then it is marked in ``noted``): a warning
    said once per process and key.  Thread-safe: of threads that ask at once, one gets ``True``.  ``limit``: when
    ``noted`` holds more than ``limit`` keys, it is emptied before ``key`` is added (keys said long ago may be
    said again; ``None``: never emptied)."""
    with _FIRST_TIME_LOCK:
        if key in noted:
            return False
        if limit is not None and len(noted) > limit:
            noted.clear()
        noted.add(key)
        return True


#: OSError numbers a save cannot get past by trying again (``None``: numpy's short write on a full disk): a full
#: disk, a quota, a file too large, a read-only file system, no permission
SAVE_ERRNOS = frozenset({None, errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM})


def save_unwritable(where: str, error: BaseException, doing: str | None, tail: str) -> BaseException:
    """What a save raises for ``error``, met while ``doing`` (``"creating the folder ..."``; ``None`` or ``""``:
    nothing to add): where trying again cannot help (an :class:`OSError` whose ``errno`` is in
    :data:`SAVE_ERRNOS`), an :class:`~ragkit.errors.ArtifactError`
    ``<where>: the save could not be written (<reason>, <doing>); <tail>`` (``where`` names the save, e.g. its
    path; ``tail`` says what was left and what to do); any other ``error`` (an ``ArtifactError`` already, a
    network file system's EIO, not an ``OSError``) is returned as it is, to be raised unchanged (retryable).
    The caller raises the result ``from error``."""
    if not isinstance(error, OSError) or isinstance(error, ArtifactError) or error.errno not in SAVE_ERRNOS:
        return error
    return ArtifactError(f"{where}: the save could not be written ({error.strerror or error}"
                         + (f", {doing}" if doing else "") + f"); {tail}")


def _keep_mode(path: Path, tmp: Path) -> None:
    """Give ``tmp``, about to be renamed onto ``path``, the read/write/execute permission bits of the file
    ``path`` when there is one, and its owner and group where they are not this process's: an overwrite keeps a
    ``chmod 600`` (or a group's ``664``), and the user (group) the file belonged to, as writing the file in
    place would, instead of the temporary file's umask default and this process's ids.  The setuid, setgid and
    sticky bits are never copied (new contents must not run with another user's rights); an owner or group
    that cannot be given (only root may give a file away) is left as the temporary file's, silently.  A
    ``tmp`` the block did not create is left alone."""
    try:
        st = os.stat(path)
    except OSError:  # no file there yet: the new one keeps the umask's permissions
        return
    if not os.path.lexists(tmp):
        return
    geteuid = getattr(os, "geteuid", None)  # (none on Windows, whose files have no POSIX owner to keep)
    uid = st.st_uid if geteuid is not None and st.st_uid != geteuid() else -1
    gid = st.st_gid if geteuid is not None and st.st_gid != os.getegid() else -1
    if uid != -1 or gid != -1:
        try:
            os.chown(tmp, uid, gid)
        except OSError:  # (PermissionError: not root) the group alone, which a member of it may give
            if gid != -1 and uid != -1:
                try:
                    os.chown(tmp, -1, gid)
                except OSError:
                    pass
    os.chmod(tmp, stat.S_IMODE(st.st_mode) & 0o777)  # (after chown, which may clear bits)


def stdout_file(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is the file, terminal, pipe or socket standard output writes into (its ``(st_dev, st_ino)``
    are ``os.fstat(sys.stdout.fileno())``'s: ``/dev/stdout``, or the name of the file, terminal or named pipe
    standard output writes): written through standard output, after what it holds (:func:`text_output`), as ``-``
    is, neither replaced by a renamed file nor truncated by an ``open(path, "w")``, and never with another output
    (``-o - --run /dev/stdout``: both on one stream).  The null device is not (``/dev/null`` with standard output sent
    there too: nothing is kept, two outputs may go there); nor is anything where standard output is closed or is no
    file (a test's ``StringIO``)."""
    try:
        out = os.fstat(sys.stdout.fileno())
        st = os.stat(path)
    except (AttributeError, OSError, ValueError):  # (no stdout, no fileno: io.UnsupportedOperation, a ValueError)
        return False
    return (st.st_dev, st.st_ino) == (out.st_dev, out.st_ino) and not _null_device(st)


def _null_device(st: os.stat_result) -> bool:
    """Whether ``st`` is the null device's (``os.devnull``)."""
    if not stat.S_ISCHR(st.st_mode):
        return False
    try:
        return st.st_rdev == os.stat(os.devnull).st_rdev
    except (OSError, AttributeError):  # (no st_rdev on Windows)
        return False


def writes_through(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is no regular file but a character device or a pipe (``/dev/null``, ``/dev/stdout``,
    a shell's ``>(cmd)``, a named pipe): written straight into, since a temporary file renamed over it would
    replace the device or the pipe (there is no file to keep whole)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return stat.S_ISCHR(mode) or stat.S_ISFIFO(mode)


#: the paths naming an open file descriptor of this process (Linux's ``/dev/fd`` and ``/proc/self/fd``, the BSDs' and
#: macOS's ``/dev/fd``)
_FD_PATH = re.compile(r"/(?:dev/fd|proc/self/fd)/(\d+)")

#: the standard streams' own names and their descriptors
_STD_PATHS = {"/dev/stdin": 0, "/dev/stdout": 1, "/dev/stderr": 2}


def descriptor_of(path: str | os.PathLike[str]) -> int | None:
    """The file descriptor of this process that ``path`` names: ``/dev/stdin``, ``/dev/stdout``, ``/dev/stderr``
    (0, 1, 2), ``/dev/fd/N`` and ``/proc/self/fd/N`` (N, open or not), any other path of what standard output writes
    into (:func:`stdout_file`: 1); ``None`` for any other path.  A file written there goes through the descriptor
    (:func:`text_output`): a rename onto the file the descriptor writes would replace it, and an ``open(path, "w")``
    truncate what it holds (a shell's ``2>>err.log``, ``3>>fd.log``)."""
    shown = os.fsdecode(os.fspath(path))
    if shown in _STD_PATHS:
        return _STD_PATHS[shown]
    m = _FD_PATH.fullmatch(shown)
    if m is not None:
        return int(m.group(1))
    return 1 if stdout_file(path) else None


def _regular_descriptor(fd: int) -> bool:
    """Whether ``fd`` is an open descriptor of a regular file (``2>>err.log``)."""
    try:
        return stat.S_ISREG(os.fstat(fd).st_mode)
    except (OSError, OverflowError):
        return False


@contextmanager
def text_output(path: str | os.PathLike[str]) -> Iterator[TextIO]:
    """A UTF-8 text stream onto ``path``: through the descriptor ``path`` names where that writes into a regular file
    (:func:`descriptor_of`: ``/dev/stdout`` with standard output redirected to a file, ``/dev/stderr``,
    ``/dev/fd/3``; a duplicate of it, written after what the file holds, not truncating it), straight into a
    character device or a pipe (:func:`writes_through`; lines end in ``\\n``), else into a temporary file beside it,
    renamed into place when the block ends (its folder flushed then: ``sync_folder``) and deleted if it raises
    (:func:`atomic_file`, whose errors for a folder or a socket it keeps).  The temporary file names this process
    (``owner=True``), and those a killed write of ``path`` left are removed first (:func:`remove_stale_tempfiles`)."""
    fd = descriptor_of(path)
    if fd is not None and _regular_descriptor(fd):
        for stream in (sys.stdout, sys.stderr):  # (what was printed before goes first)
            try:
                if stream is not None and stream.fileno() == fd:
                    stream.flush()
            except (AttributeError, OSError, ValueError):  # (no fileno: io.UnsupportedOperation, a ValueError)
                pass
        with open(os.dup(fd), "w", encoding="utf-8", newline="\n") as f:  # (at its offset)
            yield f
        return
    if writes_through(path):
        with open(path, "w", encoding="utf-8", newline="\n") as f:
            yield f
        return
    with atomic_file(Path(path), owner=True, remove_stale=True, sync_folder=True) as tmp, \
            open(tmp, "w", encoding="utf-8") as f:
        yield f


@contextmanager
def atomic_file(path: str | Path, *, owner: bool = False, durable: bool = True,
                remove_stale: bool = False, sync_folder: bool = False) -> Iterator[Path]:
    """Yield a unique temporary path beside ``path`` (same suffix, so ``np.save`` and
    ``safetensors`` keep the name), ``.<stem>.<pid>-<random>.tmp<suffix>``, or with ``owner=True``
    ``.<stem>.<pid>@<host>[@<pid namespace>]-<random>.tmp<suffix>`` (:func:`owner_tag`; one a killed process
    left behind is then found and removed by :func:`remove_stale_tempfiles`, the rule of
    :func:`remove_stale_tempdirs`); when the block ends it is renamed onto ``path`` (``os.replace``), and
    deleted if the block raises (a deletion that fails, on a read-only file system, say, is ignored: the
    block's own error is the one raised).  A ``path`` that exists and is no regular file (a folder, a pipe,
    a device) is an :class:`ArtifactError` before the block runs.  A symbolic link to a file is written
    through, as ``open(path, "w")`` would: its target gets the new file, the link stays.

    ``remove_stale`` (with ``owner=True``): the temporary files a killed write of the same file left beside it
    (named with its owner, whose process has ended) are removed first (:func:`remove_stale_tempfiles` with
    ``name``), in the folder the file is written in (a link's target's), once ``path`` was found writable (a
    dangling link, a folder: refused, nothing removed).

    ``durable`` (default): the temporary file's data is flushed to the disk (:func:`fsync_path`) before the rename,
    so that after a power loss or a crash of the system ``path`` holds the old file or the new one whole.  Without
    it, a file system that writes the data after the rename (ext4's delayed allocation, XFS) could leave ``path``
    empty or zero-filled where the rename reached the disk and the data did not: a cache shard of zeros was served as
    vectors (finite numbers).  It costs one ``fsync`` per file (0.2 ms at best for a small file here, a few ms on a
    busy disk; for a large one, the time to write out data the kernel writes soon anyway).  ``durable=False``: a
    scratch file whose loss after a crash does not matter.

    ``sync_folder`` (with ``durable``): the folder is flushed too once the file is renamed into place, so that a
    write that returned is not undone by a power loss (the rename reached the folder in memory only: ``path`` came
    back as the old file, or none).  One more ``fsync``: for a file a user named (:meth:`Corpus.save
    <ragkit.types.Corpus.save>`, :func:`text_output`'s run files and reports), not for a cache entry (a lost rename
    loses an entry, computed again) nor a file inside a save's temporary folder (flushed with the folder, then
    renamed: :class:`~ragkit._saves.atomic_dir`).

    Examples
    --------
    >>> import json, tempfile
    >>> target = Path(tempfile.mkdtemp()) / "x.json"
    >>> with atomic_file(target) as tmp:
    ...     _ = tmp.write_text(json.dumps({"a": 1}))
    >>> json.loads(target.read_text())
    {'a': 1}
    """
    path = Path(path)
    if path.is_symlink() and path.is_file():  # (a rename would replace the link, not its target)
        path = Path(os.path.realpath(path))
    if os.path.lexists(path) and not path.is_file():  # a rename would replace a folder's name, a pipe or a device
        raise ArtifactError(f"{path}: exists and is not a regular file (a folder, pipe or device); expected a path "
                            "to write a file to")
    if remove_stale:  # what a killed write of it left (owner=True: its owner named, found ended)
        remove_stale_tempfiles(path.parent, name=path.name)
    tag = owner_tag() if owner else str(os.getpid())
    tmp = path.with_name(f".{path.stem}.{tag}-{secrets.token_hex(4)}.tmp{path.suffix}")
    try:
        yield tmp
        if durable:
            fsync_path(tmp)
        _keep_mode(path, tmp)
        os.replace(tmp, path)
        if durable and sync_folder:  # the rename itself on the disk (the folder's entry): else a power loss could
            fsync_path(path.parent)  # undo it
    except BaseException:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:  # (EROFS, EACCES: what made the block fail makes this fail too; its error says why)
            pass
        raise


#: what ``os.fsync`` raises where a file system cannot sync (nothing to make durable there): ignored
_NO_SYNC_ERRNOS = frozenset(getattr(errno, name) for name in ("EINVAL", "ENOTSUP", "EOPNOTSUPP", "EROFS")
                             if hasattr(errno, name))


def fsync_path(path: str | os.PathLike[str]) -> None:
    """Flush the data of the file (or folder) ``path`` to the disk (``os.fsync``), so that a rename of it made next
    survives a power loss with its contents (:func:`atomic_file`).  A path that cannot be opened (absent, or not
    readable: on Windows, where a sync needs a writable handle, a read-only file) and a file system that cannot sync
    (``EINVAL``, ``ENOTSUP``) are passed over; a failed write-back (``EIO``, ``ENOSPC``) is raised: the data is
    not on the disk."""
    flags = os.O_RDWR if os.name == "nt" else os.O_RDONLY
    try:
        fd = os.open(path, flags | getattr(os, "O_BINARY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as e:
        if e.errno not in _NO_SYNC_ERRNOS:
            raise
    finally:
        os.close(fd)


def fsync_tree(folder: str | os.PathLike[str]) -> int:
    """:func:`fsync_path` of every file below ``folder``, then of each folder (deepest first: the names its
    entries were created under), before ``folder`` itself is renamed into place (a save's temporary folder); the
    number of files flushed.  A loop over the files (a save holds a few dozen)."""
    count = 0
    folders = []
    for root, _dirs, files in os.walk(folder):
        folders.append(root)
        for name in files:
            fsync_path(os.path.join(root, name))
            count += 1
    for root in reversed(folders):
        fsync_path(root)
    return count


def utf8_line(raw: bytes, n: int, where: str | os.PathLike[str], expected: str) -> str:
    """Line ``n`` (``raw``, its bytes) as text, its byte-order mark dropped on line 1; a line that is not UTF-8 is a
    :class:`DataError` naming ``where:n``, the byte and ``expected`` (what the file should be: "BEIR files are UTF-8
    JSON lines")."""
    try:
        return raw.decode("utf-8-sig" if n == 1 else "utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{where}:{n}: not UTF-8 (byte {raw[e.start]:#04x} at column {e.start + 1}); "
                        f"{expected}") from None


def utf8_lines(path: Path, expected: str, where: str | None = None) -> Iterator[tuple[int, bytes, str]]:
    """``(line number, raw bytes, text)`` of each line of a UTF-8 text file, a byte-order mark
    dropped; a line that is not UTF-8 is a :class:`DataError` naming ``path:line`` (or ``where:line``: what messages
    call the file, ``"--queries - (standard input)"`` for one holding standard input), the byte and
    ``expected`` (what the file should be: "BEIR files are UTF-8 JSON lines"; :func:`utf8_line`)."""
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            yield n, raw, utf8_line(raw, n, path if where is None else where, expected)


def file_above(path: str | Path) -> Path | None:
    """The nearest existing parent of ``path`` when it is a file (nothing can be written below it),
    else ``None``."""
    blocker = next((p for p in Path(path).parents if p.exists()), None)
    return blocker if blocker is not None and not blocker.is_dir() else None


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def folder_checksums(folder: Path) -> dict[str, str]:
    """``{relative path: sha256}`` of every file under ``folder``, sorted by path; paths with ``/`` whatever the
    system (a save written on Windows loads on Linux and the other way round)."""
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    return {p.relative_to(folder).as_posix(): sha256_file(p) for p in files}


def saved_relpath(folder: Path, rel: object, record: str) -> str:
    """``rel``, a path a save's own record (``record``: "manifest.json's sha256", ...) lists, normalised
    (``os.path.normpath``), after checking that it names something inside ``folder``: an absolute path, a
    drive, one leading out with ``..``, the folder itself or a NUL byte is an :class:`ArtifactError` (a
    crafted record would otherwise make ragkit read, and hash, files outside the save).  A ``\\`` separates
    folders too (a record written on Windows by an older ragkit), unless a file of that very name is there."""
    text = rel if isinstance(rel, str) else ""
    if "\\" in text and os.sep == "/" and "\x00" not in text and not os.path.lexists(os.path.join(folder, text)):
        text = text.replace("\\", "/")
    norm = os.path.normpath(text) if text and "\x00" not in text else ""
    parts = Path(norm).parts
    if not norm or os.path.isabs(norm) or os.path.splitdrive(norm)[0] or norm in (".", "..") \
            or (parts and parts[0] == ".."):
        raise ArtifactError(f"{folder}: {record} lists {rel!r:.200}, which is not a path inside the folder (absolute, "
                            "leading out with '..', or the folder itself); expected paths relative to the folder, as "
                            "ragkit's saves write them: refusing to read it (the folder was not written, or was "
                            "changed after saving, by ragkit)")
    return norm


def check_inside(folder: Path, rel: str, record: str) -> Path:
    """``folder / rel`` (``rel`` from :func:`saved_relpath`), refused (:class:`ArtifactError`) when it is a
    symbolic link, or when a linked folder on the way leads outside ``folder``: ragkit never writes links
    into a save, and a link would make a load read a file from elsewhere (whose checksum the save's author
    wrote to match)."""
    p = folder / rel
    if p.is_symlink():
        raise ArtifactError(f"{p}: a symbolic link (to {os.readlink(p)}), listed in {record}; ragkit never writes "
                            "links into a save, and loads no file through one: copy the file itself into the folder, "
                            "or save the pipeline again")
    base = os.path.realpath(folder)
    real = os.path.realpath(p)
    if os.path.commonpath([base, real]) != base:
        raise ArtifactError(f"{p}: leads outside the folder {folder} (to {real}) through a linked folder, listed in "
                            f"{record}; ragkit loads no file from outside the save: save the pipeline again")
    return p


def verify_checksums(folder: Path, digests: Mapping[str, str], record: str = "the saved checksums") -> None:
    """Raise :class:`~ragkit.errors.ArtifactError` naming the first file of ``digests`` that is
    missing under ``folder`` or whose bytes changed since the digests were taken.  Every path is checked
    first to lie inside ``folder`` (:func:`saved_relpath`: no absolute path, none leading out with ``..``),
    and no file is read through a symbolic link (:func:`check_inside`); ``record`` names the record
    in those errors (``"manifest.json's sha256"``)."""
    paths = [(saved_relpath(folder, rel, record), digest) for rel, digest in digests.items()]
    for rel, digest in paths:
        p = check_inside(folder, rel, record)
        if not p.is_file():
            raise ArtifactError(f"{p}: listed in the saved checksums but missing; the folder was changed after "
                                "saving")
        if sha256_file(p) != digest:
            raise ArtifactError(f"{p}: checksum mismatch; the file was changed or truncated after saving")


#: the ``fcntl`` module where there is one (POSIX), else ``None`` (Windows): ``flock`` for the folder locks here,
#: the GGUF copy's lock and the chunk cache's trim lock
FCNTL: Any = importlib.import_module("fcntl") if importlib.util.find_spec("fcntl") is not None else None

#: descriptors of the folder locks this process holds (closed in a forked child: a child of a thread inside a
#: load would otherwise keep its shared lock, and every save of the folder would wait for the child to end)
_HELD_FDS: set[int] = set()


def _close_held_in_child() -> None:
    for fd in list(_HELD_FDS):
        try:
            os.close(fd)  # (the parent's lock stays: flock belongs to the open file, which the parent still holds)
        except OSError:
            pass
    _HELD_FDS.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_close_held_in_child)


def _open_dir(path: Path) -> int | None:
    """A read-only descriptor of the folder ``path`` (recorded in :data:`_HELD_FDS`), or ``None``."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None
    _HELD_FDS.add(fd)
    return fd


def _close_dir(fd: int) -> None:
    """Close ``fd`` (releasing its flock) unless a fork's child already closed its copy."""
    if fd in _HELD_FDS:
        _HELD_FDS.discard(fd)
        os.close(fd)


def _flock(fd: int, mode: int, deadline: float) -> bool:
    """``flock(fd, mode)``, polling until ``deadline`` (``time.monotonic()``); whether it is held."""
    pause = 0.001
    while True:
        try:
            FCNTL.flock(fd, mode | FCNTL.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(pause)
            pause = min(2 * pause, 0.05)
        except OSError:  # no flock here (some network file systems)
            return False


def _same_inode(path: Path, fd: int) -> bool:
    """Whether ``fd`` is the folder (or file) at ``path`` now (a save may have swapped another onto it)."""
    try:
        now, held = os.stat(path), os.fstat(fd)
    except OSError:
        return False
    return (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino)


def _identity(path: Path) -> tuple[int, int] | None:
    """``(st_dev, st_ino)`` of what is at ``path`` now (a link followed), or ``None``: nothing there."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


#: the files of a ragkit save (a pipeline's manifest, an operator's parameters) whose ``flock`` is the turnstile
#: of its folder (:func:`folder_lock`): the first of them that is there
GATE_FILES = ("manifest.json", "params.json")


def _open_gate(path: Path) -> tuple[int, Path] | None:
    """A read-only descriptor of the turnstile file of the folder ``path`` (the first of :data:`GATE_FILES` there
    that is a regular file, recorded in :data:`_HELD_FDS`) and that file's path (:func:`_same_inode` compares with
    it: the file skipped, a link or a folder named ``manifest.json``, never matches), or ``None`` (none there, or
    unreadable)."""
    for name in GATE_FILES:
        gate = path / name
        try:
            if not stat.S_ISREG(os.lstat(gate).st_mode):
                continue
            fd = os.open(gate, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0))
        except OSError:
            continue
        _HELD_FDS.add(fd)
        return fd, gate
    return None


@contextmanager
def folder_lock(path: Path, *, exclusive: bool, wait_s: float | None = None) -> Iterator[bool]:
    """An advisory ``flock`` on the folder ``path`` itself (no lock file is made): shared by loads
    (``exclusive=False``: any number at once), exclusive for a save's swap of a new folder onto ``path``
    (:class:`~ragkit._saves.atomic_dir`), so a load never reads half of one save and half of the next.

    Saves go first: the save's own record in the folder (its ``manifest.json``, or ``params.json``:
    :data:`GATE_FILES`) is a turnstile (``flock`` on it: exclusive while a save waits for the loads in progress,
    shared for an instant as a load starts), so loads starting back to back do not keep a save waiting (with
    the folder lock alone, two threads loading in a loop held a save for its whole wait), and a save waiting
    for the loads of one folder keeps no load or save of another waiting (the turnstile was the parent
    folder, shared by every folder in it).  The parent folder is locked too, for the swap alone (exclusive
    once the folder's lock is held; a load passes it for an instant): a load that starts while a save renames
    twice (where the folders cannot be swapped in one step), or :func:`~ragkit._saves.restore_interrupted_save`,
    waits for the renames.  Each lock is taken on what is at ``path`` once held (a save that swapped ``path``
    meanwhile: the new folder, and its record, are locked instead).  A forked child does not keep the locks of
    its parent's threads.

    Yields whether the lock is held: ``False`` where it cannot be (no ``fcntl``, a missing folder, a
    file system without ``flock``) or after ``wait_s`` seconds of waiting (default
    :data:`FOLDER_LOCK_WAIT_S`); callers then go on without it (loads compare the folder's identity before
    and after, and load again)."""
    fd = gate = parent = None
    held = False
    try:
        if FCNTL is not None:
            mode = FCNTL.LOCK_EX if exclusive else FCNTL.LOCK_SH
            wait = FOLDER_LOCK_WAIT_S if wait_s is None else wait_s
            deadline = time.monotonic() + wait
            if not exclusive:  # (a load waits for a swap of a folder in ``path``'s parent, renames included)
                parent = _open_dir(path.parent)
                if parent is not None:
                    _flock(parent, mode, deadline)
                    _close_dir(parent)
                    parent = None
            while True:  # (a save: again when another save put a folder at ``path`` while this one waited)
                before = _identity(path)
                while True:  # the turnstile: not passed in time, on without it
                    opened = _open_gate(path)
                    if opened is None:
                        break
                    gate, gate_path = opened
                    passed = _flock(gate, mode, deadline)
                    if not passed or not exclusive or _same_inode(gate_path, gate) or time.monotonic() >= deadline:
                        break
                    _close_dir(gate)  # swapped meanwhile: the new save's record is the turnstile now
                    gate = None
                if gate is not None and not exclusive:
                    _close_dir(gate)  # (a load passes the turnstile: it holds it for an instant only)
                    gate = None
                while True:
                    fd = _open_dir(path)
                    if fd is None:
                        break
                    held = _flock(fd, mode, deadline)
                    if not held or _same_inode(path, fd):
                        break
                    _close_dir(fd)  # swapped meanwhile: lock the folder at ``path`` now
                    fd, held = None, False
                    if time.monotonic() >= deadline:
                        break
                if not exclusive:
                    break
                # the swap: the parent's lock, held by others for an instant or a swap (renames) only
                parent = _open_dir(path.parent)
                if parent is not None:
                    _flock(parent, mode, max(deadline, time.monotonic() + min(wait, 5.0)))
                now = _identity(path)
                if now == before or (fd is not None and _same_inode(path, fd)) or time.monotonic() >= deadline:
                    break
                # another save put its folder at ``path`` while this one waited for the parent (a first save racing
                # another: none was there, no record nor folder locked), and loads may hold it already: lock that one
                for opened_fd in (parent, fd, gate):
                    if opened_fd is not None:
                        _close_dir(opened_fd)
                parent = fd = gate = None
                held = False
        yield held
    finally:
        for held_fd in (fd, gate, parent):
            if held_fd is not None:
                _close_dir(held_fd)


def share_like_umask(path: str | os.PathLike[str]) -> None:
    """Give the folder ``path`` the permissions a plain ``mkdir`` would (``0o777`` less the umask):
    ``tempfile`` makes its folders owner-only, and a save renamed from one stayed so."""
    os.chmod(path, 0o777 & ~_umask())


def _umask() -> int:
    """The process's umask, read from ``/proc/self/status`` where there is one (setting it to read it
    back, the fallback, is not thread-safe: a file created meanwhile by another thread would get it)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def share_file_like_umask(path: str | os.PathLike[str]) -> None:
    """Give the file ``path`` the permissions a plain ``open(path, "w")`` would (``0o666`` less the umask):
    safetensors (``save_file``, ``save_model``) writes owner-only (``0o600``) files, so the other members of
    a group sharing a cache folder (umask 002) could not read them.  The file's counterpart of
    :func:`share_like_umask` (folders)."""
    os.chmod(path, 0o666 & ~_umask())


def remove_tree(path: str | os.PathLike[str]) -> None:
    """Delete the folder ``path`` and everything in it, as ``shutil.rmtree(path, ignore_errors=True)`` does, but
    also where a folder in it is read-only (a save folder the user made ``0o555``, or ``chmod -R a-w``, replaced by a
    new save; the temporary folder of a save given those permissions): an entry that cannot be deleted gets owner
    read/write/search permission added to the folder holding it, and is deleted again.  What still fails (not this
    user's folder, a read-only file system) is left, silently, and so is the folder holding ``path``
    (never made writable here)."""
    import shutil

    top = os.path.abspath(path)

    def retry(func: Any, failed: str, _exc: object) -> None:
        if func not in (os.unlink, os.remove, os.rmdir):  # (listing or opening a folder: nothing to retry)
            return
        holder = os.path.dirname(failed)
        if os.path.commonpath([top, os.path.abspath(holder)]) != top:  # (``path``'s own parent is not ours to chmod)
            return
        try:
            os.chmod(holder, stat.S_IMODE(os.lstat(holder).st_mode) | stat.S_IRWXU)
            func(failed)
        except OSError:
            pass

    if sys.version_info >= (3, 12):
        shutil.rmtree(path, onexc=retry)
    else:
        shutil.rmtree(path, onerror=retry)


def shared_tempdir(parent: Path, prefix: str) -> Path:
    """A new temporary folder in ``parent`` with the permissions of a plain ``mkdir``, to be
    renamed into place when complete.

    Its name is ``prefix`` + :func:`owner_tag` + ``-`` + random characters; folders of that prefix left by a
    process of this host that no longer runs (a save killed midway) are removed first
    (:func:`remove_stale_tempdirs`), so a killed save does not leave its partial copy for good."""
    import tempfile

    remove_stale_tempdirs(parent, prefix)
    tmp = Path(tempfile.mkdtemp(prefix=f"{prefix}{owner_tag()}-", dir=parent))
    share_like_umask(tmp)
    return tmp


def private_tempdir(prefix: str) -> Path:
    """A new scratch folder of this process's own (``mkdtemp``'s owner-only permissions) in the system's temporary
    folder (:func:`tempfile.gettempdir`), named ``prefix`` + :func:`owner_tag` + ``-`` + random characters.

    Folders of that prefix left by a process of this host that no longer runs are removed first
    (:func:`remove_stale_tempdirs`): one whose cleanup at exit failed (on Windows a file still memory-mapped
    cannot be deleted, so its folder stayed) or that was killed does not stay for good."""
    import tempfile

    parent = Path(tempfile.gettempdir())
    remove_stale_tempdirs(parent, prefix)
    return Path(tempfile.mkdtemp(prefix=f"{prefix}{owner_tag()}-", dir=parent))


def remove_stale_tempdirs(parent: Path, prefix: str) -> list[Path]:
    """Remove the folders in ``parent`` named ``prefix<owner tag>-...`` by :func:`shared_tempdir`
    whose process has ended (:func:`owner_ended`); returns them.  A folder of a live process, of
    another host (a shared file system) or without that name is left alone."""
    host = _hostname()
    removed = []
    try:
        entries = [e for e in Path(parent).iterdir() if e.name.startswith(prefix) and e.is_dir()]
    except OSError:
        return []
    for entry in entries:
        if not owner_ended(entry.name, prefix, host, path=entry):
            continue
        remove_tree(entry)
        removed.append(entry)
    return removed


#: a temporary file of :func:`atomic_file`: ``.<stem>.<pid>[@<host>]-<8 hex>.tmp<suffix>`` (the stem is as short as
#: it can be: a host name may hold dots)
_TEMPFILE = re.compile(r"(\..+?\.)(\d+)(@.+)?-[0-9a-f]{8}\.tmp(\.[^.]*)?")

#: seconds a temporary file without a host in its name (written before :func:`atomic_file` had ``owner``) stays
#: untouched before :func:`remove_stale_tempfiles` takes an ended process id in it for this host's
UNTAGGED_TEMPFILE_AGE_S = 24 * 3600.0


def remove_stale_tempfiles(folder: Path, *, name: str | None = None) -> list[tuple[Path, int]]:
    """Remove the temporary files of :func:`atomic_file` in ``folder`` whose writer has ended: those named
    with ``owner=True`` (``.<stem>.<owner tag>-...``) whose process ran on this host and no longer runs
    (:func:`owner_ended`, the rule of :func:`remove_stale_tempdirs`), and untagged ones (``.<stem>.<pid>-...``,
    written by an older ragkit) whose process id runs nowhere here and which nobody has written for
    :data:`UNTAGGED_TEMPFILE_AGE_S` (a writer on another host of a shared disk keeps writing its file).
    Returns ``(path, bytes)`` of each removed; a file of a live process, of another host, or that cannot be
    removed is left alone.  ``name``: only the temporary files of the file ``folder / name`` (a command's output in
    a user's folder: the temporary files of other writers there are theirs to remove)."""
    host = _hostname()
    own = None if name is None else (f".{Path(name).stem}.", Path(name).suffix)  # (atomic_file's name's parts)
    start = "." if own is None else own[0]
    removed = []
    try:  # (names alone, filtered by their start before any Path or regex: an output's folder may hold 50,000 files)
        names = [n for n in os.listdir(folder) if n.startswith(start) and ".tmp" in n]
    except OSError:
        return []
    now = time.time()
    for n in names:
        m = _TEMPFILE.fullmatch(n)
        if m is None or (own is not None and (m.group(1), m.group(4) or "") != own):
            continue
        entry = Path(folder, n)
        try:
            st = entry.lstat()
            if not stat.S_ISREG(st.st_mode):
                continue
            if m.group(3) is not None:
                if not owner_ended(entry.name, m.group(1), host, path=entry):
                    continue
            elif _alive(int(m.group(2))) or now - st.st_mtime < UNTAGGED_TEMPFILE_AGE_S:
                continue
            entry.unlink()
        except OSError:
            continue
        removed.append((entry, int(st.st_size)))
    return removed


def _hostname() -> str:
    import socket

    return socket.gethostname()


def owner_tag() -> str:
    """What names this process in the temporary files and folders it writes (:func:`atomic_file` with
    ``owner=True``, :func:`shared_tempdir`): ``<pid>@<host>``, and ``@<pid namespace>`` (a number) where the
    system has PID namespaces (Linux): containers of one host sharing its name (``docker --network host``) and a
    folder each have their own process ids, which :func:`owner_ended` then does not judge from another's."""
    ns = _pid_namespace()
    return f"{os.getpid()}@{_hostname()}" + (f"@{ns}" if ns is not None else "")


def _pid_namespace() -> int | None:
    """The identity (inode number) of this process's PID namespace, ``None`` where there is none to read."""
    try:
        return os.stat("/proc/self/ns/pid").st_ino
    except (OSError, ValueError):
        return None


#: seconds a temporary file or folder of a process of this host but another PID namespace (another container)
#: stays untouched since it was last written before :func:`owner_ended` takes it for an ended writer's (its
#: process id means nothing here)
FOREIGN_NAMESPACE_AGE_S = 24 * 3600.0


def owner_ended(name: str, prefix: str, host: str | None = None, path: Path | None = None) -> bool:
    """Whether the process that made the file or folder ``name`` (``prefix<owner tag>-...``, :func:`owner_tag`)
    ran on this host (``host``: its name, looked up when not given) and has ended; ``False`` for a live process,
    another host's (which this one cannot tell) or a name of another shape.  A tag of another PID namespace of
    this host (another container) is judged by age instead: ended once ``path`` (the file or folder, given) has
    not been written for :data:`FOREIGN_NAMESPACE_AGE_S` (never, without ``path``); a tag without a namespace
    (``<pid>@<host>``, an older ragkit's or a system without namespaces) by its process id, as before."""
    pid, at, where = name[len(prefix):].rsplit("-", 1)[0].partition("@")
    where, _, ns = where.partition("@")
    if not at or not pid.isdigit() or where != (host or _hostname()):
        return False
    if not ns:
        return not _alive(int(pid))
    if ns == str(_pid_namespace()):
        return not _alive(int(pid))
    return path is not None and _idle(path, FOREIGN_NAMESPACE_AGE_S)


def _idle(path: Path, age_s: float) -> bool:
    """Whether nothing at ``path`` (a file, or a folder and everything in it) was written for ``age_s`` seconds."""
    since = time.time() - age_s
    try:
        if path.lstat().st_mtime >= since:
            return False
        if path.is_dir() and not path.is_symlink():
            for root, dirs, files in os.walk(path):
                for n in (*dirs, *files):
                    if os.lstat(os.path.join(root, n)).st_mtime >= since:
                        return False
    except OSError:
        return False
    return True


def _alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this machine (one of another user counts as running)."""
    if os.name == "nt":  # (signal 0 is CTRL_C_EVENT there: os.kill would interrupt the process)
        return _alive_nt(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True
    return True


def _alive_nt(pid: int) -> bool:
    """:func:`_alive` on Windows: ``OpenProcess`` finds the process and it has no exit code yet; one that
    cannot be opened for another reason than not existing (access denied) counts as running."""
    import ctypes
    from ctypes import wintypes

    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)  # type: ignore[attr-defined]
    kernel32.OpenProcess.restype = wintypes.HANDLE  # (a handle is pointer-wide, not the default C int)
    kernel32.OpenProcess.argtypes = (wintypes.DWORD, wintypes.BOOL, wintypes.DWORD)
    handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
    if not handle:
        return ctypes.get_last_error() != 87  # type: ignore[attr-defined]  # ERROR_INVALID_PARAMETER: no such process
    try:
        code = ctypes.c_ulong()
        if not kernel32.GetExitCodeProcess(handle, ctypes.byref(code)):
            return True
        return code.value == 259  # STILL_ACTIVE
    finally:
        kernel32.CloseHandle(handle)


def check_npy_size(path: Path) -> None:
    """Refuse, with :class:`ArtifactError` naming ``path``, a ``.npy`` file whose header describes more bytes
    than the file holds (an edited or truncated file: ``np.load`` would first try to allocate the whole claimed
    array, a ``MemoryError`` of terabytes for a header claiming ``(10**12,)``), or whose header's shape has a
    negative dimension (``(-1,)``: ``np.load`` said "Expected (-1,) = -1 elements").  Files of other ``.npy``
    versions, or unreadable ones, are left to ``np.load`` and its own errors."""
    import numpy as np

    try:
        with open(path, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
            elif version == (2, 0):
                shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
            else:
                return
            start = fh.tell()
        size = os.path.getsize(path)
    except (OSError, ValueError, EOFError):
        return
    if any(d < 0 for d in shape):  # (np.load then failed with "Expected (-1,) = -1 elements")
        raise ArtifactError(f"{path}: its header's shape {tuple(shape)} is invalid (a negative dimension; an array's "
                            "dimensions are 0 or more): an edited or damaged file")
    need = start + int(np.prod(shape, dtype=object)) * dtype.itemsize
    if need > size:
        raise ArtifactError(f"{path}: its header describes an array of shape {tuple(shape)} and dtype {dtype} "
                            f"({need:,} bytes), but the file holds {size:,} bytes: a truncated or edited file")
