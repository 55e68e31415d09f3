"""How :class:`~ragkit.retrievers._index.VectorIndex` lives in files: ``save`` / ``load`` (the manifest, its
format checks, the ``.npy`` arrays and the usearch file), ``.npy`` headers grown in place, checksums, memory maps
and the scratch files they keep alive.  The functions taking ``self`` / ``cls`` are :class:`VectorIndex` methods
(assigned in its class body)."""

from __future__ import annotations

import io
import mmap
import os
import re
import shutil
import weakref
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ragkit._files import atomic_file, check_npy_size
from ragkit.errors import ArtifactError, ParamError
from ragkit.retrievers._quantize import STORED_DTYPES, nonfinite_rows

if TYPE_CHECKING:
    from ragkit.retrievers._index import VectorIndex

__all__ = ["resident_bytes"]

#: the format of a saved index (``<prefix>.json``'s ``format``).  2: since 2026-12-06; an int8 HNSW graph of
#: format 1 may have been written by a ragkit that coded its queries otherwise (before a8eb881 / ae21541: a
#: query's codes now use the corpus's scale shrunk where it would clip), so it may rank slightly differently
#: now (:attr:`VectorIndex.older_query_coding`); nothing else of format 1 changed, and it loads as it is
FORMAT = 2
#: the widest vectors a saved index may hold (``ndim`` / ``d_in``): MUVERA's widest FDE (its ``MAX_FDE_DIM``)
MAX_DIMS = 1 << 20
#: the arrays an index saves, each as ``<prefix>.<name>.npy``
_ARRAYS = ("alive", "codes", "pca_mean", "pca_components", "i8_min", "i8_step", "floats")


def _crc(path: Path) -> int:
    c = 0
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 24), b""):
            c = zlib.crc32(block, c)
    return c


def _file_id(path: str | Path) -> tuple[int, ...] | None:
    """``(device, inode, size, mtime_ns)`` of ``path``, or None when it cannot be read."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _whole_map(arr: Any) -> str | None:
    """The file ``arr`` memory-maps in full (as ``np.load(mmap_mode=...)`` returns it), else None."""
    if isinstance(arr, np.memmap) and isinstance(arr.base, mmap.mmap) and arr.filename:
        return str(arr.filename)
    return None


def _frozen_array(a: np.ndarray) -> bool:
    """Whether no one can write into ``a`` without first making it writable: it is read-only, and so is every
    array it is a view of (a read-only view of a writable buffer changes with the buffer)."""
    base: Any = a
    while isinstance(base, np.ndarray):
        if base.flags.writeable:
            return False
        base = base.base
    return True


class _CrcWriter:
    """A write-only file that keeps the CRC32 of what was written through it (numpy's ``save`` then writes the
    array in chunks through ``write``: the checksum is taken as the bytes go out, not by reading the file back)."""

    def __init__(self, fh: Any) -> None:
        self.fh, self.crc = fh, 0

    def write(self, data: Any) -> int:
        self.crc = zlib.crc32(data, self.crc)
        return int(self.fh.write(data))


def _save_npy(path: Path, arr: np.ndarray) -> int:
    """``np.save`` to exactly ``path`` (no ``.npy`` appended), streaming a memory-mapped ``arr``; returns the
    CRC32 of the file written (what :func:`_crc` of it gives)."""
    with open(path, "xb") as fh:
        out = _CrcWriter(fh)
        np.save(out, arr if arr.flags.c_contiguous else np.ascontiguousarray(arr), allow_pickle=False)
    return out.crc


def _unlink_when_unmapped(path: str | Path, holder: Any) -> None:
    """Delete a superseded scratch file now (POSIX: maps of it stay valid) or, where the system
    refuses to delete a mapped file, once ``holder`` (its memory map) is collected."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError:
        if holder is not None:
            weakref.finalize(holder, _unlink_quiet, str(path))


def _unlink_quiet(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _npy_header(shape: tuple[int, ...], version: tuple[int, int] = (1, 0)) -> bytes:
    """The ``.npy`` header of a C-order little-endian float32 array of ``shape`` (numpy's layout,
    with its spare room for the first axis to grow in place)."""
    buf = io.BytesIO()
    d = {"descr": np.lib.format.dtype_to_descr(np.dtype("<f4")), "fortran_order": False, "shape": tuple(shape)}
    if version == (1, 0):
        np.lib.format.write_array_header_1_0(buf, d)
    else:
        np.lib.format.write_array_header_2_0(buf, d)
    return buf.getvalue()


def _grow_npy(path: Path, new: np.ndarray) -> bool:
    """Append rows ``new`` ``(m, d)`` float32 to the 2-D float32 ``.npy`` at ``path`` in place.

    The rows go after the data, then the header's row count is rewritten in the header's spare
    room (numpy pads ``.npy`` headers for this); existing memory maps of the file stay valid.
    Returns False, leaving the file untouched, when the file is not such an array or the new
    header would not fit (the caller then writes a new file).
    """
    fmt = np.lib.format
    with open(path, "r+b") as fh:
        try:
            version = fmt.read_magic(fh)
            if version not in ((1, 0), (2, 0)):
                return False
            read = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
            shape, fortran, dtype = read(fh)
        except ValueError:
            return False
        offset = fh.tell()
        if fortran or dtype != np.dtype("<f4") or len(shape) != 2 or shape[1] != new.shape[1]:
            return False
        end = offset + shape[0] * shape[1] * 4
        header = _npy_header((shape[0] + len(new), shape[1]), version)
        if len(header) != offset or os.fstat(fh.fileno()).st_size != end:
            return False
        fh.seek(end)
        fh.write(np.ascontiguousarray(new, dtype="<f4").data)
        fh.flush()
        fh.seek(0)
        fh.write(header)
    return True


def _meta_int(meta: dict[str, Any], key: str, path: Path, lo: int, hi: int | None) -> int:
    """``meta[key]``, an int from ``lo`` to ``hi`` (None: no bound), or an ArtifactError naming ``path``."""
    v = meta.get(key)
    if isinstance(v, bool) or not isinstance(v, int) or v < lo or (hi is not None and v > hi):
        bound = f"an integer from {lo} to {hi:,}" if hi is not None else f"an integer of at least {lo}"
        raise ArtifactError(f"{path}: {key} is {v!r}; expected {bound}")
    return v


def _random_access(arr: np.ndarray) -> np.ndarray:
    """Tell the kernel a memory-mapped array is read at random (no read-ahead: only touched pages load)."""
    import mmap

    mm = getattr(arr, "_mmap", None)
    if mm is not None and hasattr(mm, "madvise") and hasattr(mmap, "MADV_RANDOM"):
        try:
            mm.madvise(mmap.MADV_RANDOM)
        except OSError:
            pass
    return arr


def resident_bytes(path: str | Path) -> int:
    """Resident (in RAM) bytes of this process's memory mappings of ``path`` (Linux ``/proc/self/smaps``)."""
    target = str(Path(path).resolve())
    total, inside = 0, False
    try:
        with open("/proc/self/smaps") as fh:
            for line in fh:
                if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
                    inside = line.rstrip().endswith(target)
                elif inside and line.startswith("Rss:"):
                    total += int(line.split()[1]) * 1024
    except OSError:
        return -1
    return total


def _intact(self: VectorIndex, path: str | Path) -> bool:
    """Whether the file at ``path`` still holds what this index maps from it: its own scratch
    float vectors file, or a file mapped by ``load`` that has not been replaced since."""
    path = os.path.abspath(path)
    if self._floats_own is not None and path == os.path.abspath(self._floats_own):
        return os.path.isfile(path)
    return path in self._mapped and self._mapped[path] is not None and _file_id(path) == self._mapped[path]


def save(self: VectorIndex, folder: str | Path, prefix: str = "index") -> None:
    """Write the index into ``folder`` as ``<prefix>.json`` + ``<prefix>.*.npy`` + ``<prefix>.usearch``.

    Every file is written under a temporary name in ``folder`` and renamed over the old one,
    so an interrupted save leaves each previous file whole, and saving an index loaded with
    ``mmap=True`` back into its own folder is safe: a file the index maps, unchanged since
    ``load``, is kept as it is (not rewritten from its own mapping); the manifest comes last.
    """
    self._check_built()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)

    def same(src: str | None, p: Path) -> bool:  # ``p`` is the very file the index maps, unchanged
        try:
            return src is not None and self._intact(src) and p.exists() and os.path.samefile(src, p)
        except OSError:
            return False

    arrays: dict[str, np.ndarray] = {"alive": self.alive}
    if self.codes is not None:
        arrays["codes"] = self.codes
    for name in ("pca_mean", "pca_components", "i8_min", "i8_step"):
        if getattr(self, name, None) is not None:
            arrays[name] = getattr(self, name)
    if self.floats is not None:
        arrays["floats"] = self.floats
    files: dict[str, dict[str, int]] = {}
    for name, arr in arrays.items():
        p = folder / f"{prefix}.{name}.npy"
        src = _whole_map(arr)
        crc: int | None = None  # (the checksum of a file written here is taken as it is written)
        if same(src, p):
            pass
        elif src is not None and self._intact(src):  # a whole mapped file: copy it (no page faults)
            with atomic_file(p) as t:
                shutil.copyfile(src, t)
        else:
            with atomic_file(p) as t:
                crc = _save_npy(t, np.asarray(arr))
        files[p.name] = {"bytes": p.stat().st_size, "crc32": _crc(p) if crc is None else crc}
    if self.usearch is not None:
        p = folder / f"{prefix}.usearch"
        view = getattr(self, "_view", False)
        if view and same(self._view_path, p):
            pass
        elif view and self._intact(self._view_path):
            with atomic_file(p) as t:
                shutil.copyfile(self._view_path, t)
        else:
            with atomic_file(p) as t:
                self.usearch.save(str(t))
        files[p.name] = {"bytes": p.stat().st_size, "crc32": _crc(p)}
    meta = {"format": FORMAT, "config": self.config(), "d_in": self.d_in, "ndim": self.ndim,
            "backend": self.backend, "n_slots": self.n_slots, "files": files,
            "i8_scale": float(self.i8_scale) if self.dtype == "i8" else None,
            "i8_fitted_n": int(self.i8_fitted_n) if self.dtype == "i8" else None,
            "explained_variance_ratio": getattr(self, "explained_variance_ratio", None)}
    from ragkit._saves import write_json

    write_json(folder / f"{prefix}.json", meta)


def load(cls: type[VectorIndex], folder: str | Path, prefix: str = "index", mmap: bool = False,
         verify: bool = True) -> "VectorIndex":
    """Load an index written by :meth:`save`.

    ``mmap=True`` memory-maps the arrays and opens the usearch file as a view (served from
    the page cache; editing copies it into memory first).  Every file's size is checked
    and, with ``verify`` (default), its CRC32: a truncated or corrupt file raises
    :class:`ArtifactError` before usearch or numpy reads it.

    What the files hold is then checked against the manifest before any search (a folder whose
    checksums were recomputed after an edit passes the CRC32s): the backend is ``numpy`` (with
    ``<prefix>.codes.npy``) or ``hnsw`` (with ``<prefix>.usearch``), as ``search`` allows; ``ndim``
    and ``d_in`` are integers from 1 to :data:`MAX_DIMS`, as ``reduce`` relates them; every array
    has the dtype and shape the config implies (codes ``(n_slots, ndim)`` of the storage type, b1
    packed to ``ceil(ndim / 8)`` bytes; ``alive`` a bool ``(n_slots,)``; the int8 calibration and
    PCA arrays of ``ndim`` / ``d_in``; the float vectors ``(n_slots, d_in)``); the graph has the
    index's width and storage type; the calibration and PCA arrays are finite, and so are float
    codes read into memory (in blocks of ``BLOCK`` rows: ~0.3 s at 1M x 384 float32 on 2 cores,
    about what reading the file takes).  Memory-mapped codes (``mmap=True``) and the float
    vectors of ``rescore`` (always mapped) are not scanned: that would read the whole file at
    load.  Each failure is an :class:`ArtifactError` naming the file, and what was expected and
    found.
    """
    from ragkit._saves import read_json

    folder = Path(folder)
    mpath = folder / f"{prefix}.json"
    meta = read_json(mpath)
    try:
        cfg, files = dict(meta["config"]), dict(meta["files"])
        if meta.get("format", 0) > FORMAT:
            raise ArtifactError(f"{mpath}: written by a newer ragkit (index format "
                                f"{meta['format']}, this one reads {FORMAT}); upgrade ragkit")
    except (KeyError, TypeError, ValueError):
        raise ArtifactError(f"{mpath}: not a ragkit vector index manifest") from None
    known = {f"{prefix}.{name}.npy" for name in _ARRAYS} | {f"{prefix}.usearch"}
    for name, info in files.items():
        if name not in known:  # (a path elsewhere, "../x" or absolute, would be read for its checksum)
            raise ArtifactError(f"{mpath}: lists the file {name!r}; a vector index holds only "
                                f"{', '.join(sorted(known))}")
        if not isinstance(info, dict) or not all(isinstance(info.get(k), int) for k in ("bytes", "crc32")):
            raise ArtifactError(f"{mpath}: the entry of {name} is {info!r}; expected "
                                "{'bytes': int, 'crc32': int}")
        p = folder / name
        if not p.is_file():
            raise ArtifactError(f"{p}: file not found (listed in {prefix}.json)")
        size = p.stat().st_size
        if size != info["bytes"]:
            raise ArtifactError(f"{p}: truncated or altered: {size} bytes on disk, {info['bytes']} expected")
        if verify and _crc(p) != info["crc32"]:
            raise ArtifactError(f"{p}: corrupt (CRC32 mismatch with {prefix}.json)")
    try:
        self = cls(**cfg)
    except (TypeError, ValueError, ParamError) as e:  # a key or value no VectorIndex takes: the file was edited
        raise ArtifactError(f"{mpath}: its config does not describe an index ({e})") from None
    self.d_in, self.ndim = _meta_int(meta, "d_in", mpath, 1, MAX_DIMS), _meta_int(meta, "ndim", mpath, 1, MAX_DIMS)
    self.saved_format = _meta_int(meta, "format", mpath, 1, FORMAT) if "format" in meta else 1
    n_slots = _meta_int(meta, "n_slots", mpath, 0, None)
    self.backend = self._check_manifest(mpath, meta, {n[len(prefix) + 1:] for n in files})

    def arr(name: str, mm: bool = mmap) -> np.ndarray:
        p = folder / f"{prefix}.{name}.npy"
        check_npy_size(p)  # (before np.load allocates what the header claims)
        try:
            return np.load(p, allow_pickle=False, mmap_mode="r" if mm else None)
        except (ValueError, OSError, EOFError) as e:
            raise ArtifactError(f"{p}: corrupt or truncated array ({e})") from None

    def expect(name: str, a: np.ndarray, dtype: Any, shape: tuple[int, ...], why: str) -> np.ndarray:
        """``a`` (the array of ``<prefix>.<name>.npy``) when of ``dtype`` (either byte order) and ``shape``."""
        want = np.dtype(dtype)
        if (a.dtype.kind, a.dtype.itemsize) != (want.kind, want.itemsize) or a.shape != shape:
            raise ArtifactError(f"{folder / f'{prefix}.{name}.npy'}: holds a {a.dtype} array of shape {a.shape}; "
                                f"expected {want} of shape {shape} ({why} in {prefix}.json)")
        return a

    def finite(name: str, a: np.ndarray) -> None:
        found = nonfinite_rows(a)
        if found is not None:
            raise ArtifactError(f"{folder / f'{prefix}.{name}.npy'}: holds NaN or infinite values (first in row "
                                f"{found[0]} of {len(a)}); expected finite values (every score would be NaN)")

    slots = f"{n_slots} slots"
    self.alive = expect("alive", arr("alive", False), bool, (n_slots,), slots)
    self.codes = None
    if self.backend == "numpy":
        width = (self.ndim + 7) // 8 if self.dtype == "b1" else self.ndim
        store = STORED_DTYPES[self.dtype]
        why = f"dtype {self.dtype!r}, ndim {self.ndim}" + (f" (packed bits: {width} bytes)" if self.dtype == "b1"
                                                         else "") + f", {slots}"
        self.codes = expect("codes", arr("codes"), store, (n_slots, width), why)
        if self.dtype in ("f32", "f16") and not isinstance(self.codes, np.memmap):
            finite("codes", self.codes)
        if mmap:
            self._mapped[os.path.abspath(folder / f"{prefix}.codes.npy")] = _file_id(folder / f"{prefix}.codes.npy")
    if self.reduce_kind == "pca":
        self.pca_mean = expect("pca_mean", arr("pca_mean", False), np.float32, (self.d_in,), f"d_in {self.d_in}")
        self.pca_components = expect("pca_components", arr("pca_components", False), np.float32,
                                     (self.d_in, self.ndim), f"d_in {self.d_in}, ndim {self.ndim}")
        finite("pca_mean", self.pca_mean)
        finite("pca_components", self.pca_components)
    if self.dtype == "i8":
        for name in ("i8_min", "i8_step"):
            setattr(self, name, expect(name, arr(name, False), np.float32, (self.ndim,), f"ndim {self.ndim}"))
            finite(name, getattr(self, name))
        if not (self.i8_step > 0).all():
            raise ArtifactError(f"{folder / f'{prefix}.i8_step.npy'}: holds a step of "
                                f"{float(self.i8_step.min()):g}; expected positive steps (the int8 calibration)")
        self.i8_scale = np.float32(meta["i8_scale"])  # (checked by _check_manifest)
        # (a save before it was recorded: the slots then, as add() read them, fitted on at least those)
        self.i8_fitted_n = int(meta.get("i8_fitted_n") or self.n_slots)
    self.explained_variance_ratio = meta.get("explained_variance_ratio")
    self.floats = None
    if self.rescore:
        self.floats = _random_access(expect("floats", arr("floats", True), np.float32, (n_slots, self.d_in),
                                            f"rescore: d_in {self.d_in}, {slots}"))
        self._mapped[os.path.abspath(folder / f"{prefix}.floats.npy")] = _file_id(folder / f"{prefix}.floats.npy")
    self.usearch = None
    if self.backend == "hnsw":
        p = folder / f"{prefix}.usearch"
        try:
            self.usearch = self._restore(str(p), view=mmap)
        except Exception as e:  # usearch raises RuntimeError/ValueError on a bad header
            raise ArtifactError(f"{p}: usearch could not read it ({e})") from None
        # every live slot, and the dead ones not yet dropped by a rebuild (earlier versions: none)
        if self.usearch is None or not self.n_alive <= self.usearch.size <= self.n_slots:
            raise ArtifactError(f"{p}: holds {getattr(self.usearch, 'size', None)} vectors, "
                                f"{self.n_alive} to {self.n_slots} expected")
        width = 8 * ((self.ndim + 7) // 8) if self.dtype == "b1" else self.ndim
        kind = str(getattr(self.usearch, "dtype", "")).rsplit(".", 1)[-1].lower()
        if int(self.usearch.ndim) != width or kind != self.dtype:
            raise ArtifactError(f"{p}: a graph of {self.usearch.ndim} dimensions stored as {kind}; expected "
                                f"{width} dimensions stored as {self.dtype} (dtype {self.dtype!r}, ndim "
                                f"{self.ndim} in {prefix}.json)")
        from usearch.index import Index

        try:  # nodes usearch itself removed (earlier versions' remove): rebuilt before the next add
            self._graph_free = int((Index.metadata(str(p)) or {}).get("count_deleted") or 0) > 0
        except Exception:
            self._graph_free = True
        self._view, self._view_path = mmap, os.path.abspath(p)  # absolute: a later chdir changes nothing
        if mmap:
            self._mapped[os.path.abspath(p)] = _file_id(p)
    self.built = True
    return self


def _check_manifest(self: VectorIndex, mpath: Path, meta: dict[str, Any], present: set[str]) -> str:
    """The backend the manifest ``meta`` (at ``mpath``) names, after checking it against the config of
    this (new, unbuilt) index, its ``d_in`` / ``ndim`` (already set) and the files it lists (``present``:
    their names less the prefix, ``codes.npy``, ``usearch``, ...): what each needs is listed, nothing is
    read.  ArtifactError naming ``mpath`` otherwise."""
    backend = meta.get("backend")
    if backend not in ("numpy", "hnsw"):
        raise ArtifactError(f"{mpath}: backend is {backend!r}; expected 'numpy' (exact search) or 'hnsw' "
                            "(a usearch graph)")
    if self.search_mode != "auto" and backend != ("numpy" if self.search_mode == "exact" else "hnsw"):
        raise ArtifactError(f"{mpath}: backend {backend!r} with search {self.search_mode!r}; expected backend "
                            f"{'numpy' if self.search_mode == 'exact' else 'hnsw'!r}")

    def needs(name: str, why: str) -> None:
        if name not in present:
            raise ArtifactError(f"{mpath}: lists no {mpath.stem}.{name}, which {why} needs; it lists "
                                f"{', '.join(sorted(f'{mpath.stem}.{n}' for n in present)) or 'no file'}")

    needs("alive.npy", "every index")
    if backend == "numpy":
        needs("codes.npy", "backend 'numpy'")
    else:
        needs("usearch", "backend 'hnsw'")
    other = "usearch" if backend == "numpy" else "codes.npy"
    if other in present:
        raise ArtifactError(f"{mpath}: lists {mpath.stem}.{other}, which backend {backend!r} does not keep; "
                            f"expected {mpath.stem}.{'codes.npy' if backend == 'numpy' else 'usearch'} alone")
    if self.reduce_kind == "none" and self.ndim != self.d_in:
        raise ArtifactError(f"{mpath}: ndim {self.ndim} and d_in {self.d_in}; expected equal (reduce 'none' "
                            "keeps every dimension)")
    if self.reduce_kind != "none" and (self.ndim != self.reduce_dims or self.reduce_dims > self.d_in):
        raise ArtifactError(f"{mpath}: ndim {self.ndim} and d_in {self.d_in} with reduce {self.reduce!r}; expected "
                            f"ndim {self.reduce_dims}, at most d_in")
    if self.reduce_kind == "pca":
        needs("pca_mean.npy", f"reduce {self.reduce!r}")
        needs("pca_components.npy", f"reduce {self.reduce!r}")
    if self.rescore:
        needs("floats.npy", "rescore")
    if self.dtype == "i8":
        needs("i8_min.npy", "dtype 'i8' (its calibration)")
        needs("i8_step.npy", "dtype 'i8' (its calibration)")
        scale, fitted = meta.get("i8_scale"), meta.get("i8_fitted_n")
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0 < scale < np.inf:
            raise ArtifactError(f"{mpath}: i8_scale is {scale!r}; expected a positive number with dtype 'i8'")
        if fitted is not None and (isinstance(fitted, bool) or not isinstance(fitted, int) or fitted < 0):
            raise ArtifactError(f"{mpath}: i8_fitted_n is {fitted!r}; expected null or a count of vectors")
    return str(backend)
