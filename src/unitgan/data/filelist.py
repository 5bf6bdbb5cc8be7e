"""File lists of large image folders: scanned once, cached on disk, held compactly in memory.

A folder of 100k images is listed in one pass of ``os.scandir`` (no ``stat`` per file) and its headers are
read once; both are cached in ``<cache_dir>/filelists/<hash of the folder>.npz``. The cache is valid while
every directory of the tree keeps its modification time (adding, removing or renaming a file anywhere
changes the mtime of its directory); a file rewritten in place keeps its cached size, but its real size is
checked again when it is read.

In memory the paths are two numpy arrays (UTF-8 bytes and offsets), about one byte per character: no
Python object per file, so data-loader workers share the list without copy-on-write growth and memory
stays flat as the data set grows. Images themselves are read lazily, by the workers, one per sample.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

import unitgan.data.io as image_io
from unitgan.data.io import IMAGE_EXTENSIONS, image_size
from unitgan.errors import UnitganError
from unitgan.runtime import atomic_write

log = logging.getLogger(__name__)

CACHE_VERSION = 1
RACY_NS = 2_000_000_000  # directories modified less than 2 s before a scan are not trusted from the cache
_UNREAD = -2  # header not read yet
_BAD = -1  # header unreadable


class PathList(Sequence):
    """Paths under ``root`` stored as one byte buffer and offsets; ``lst[i]`` is a ``Path``."""

    def __init__(self, root: str | Path, blob: np.ndarray, offsets: np.ndarray):
        self.root = Path(root)
        self.blob = blob  # uint8 [total bytes]: relative paths, UTF-8 (surrogate escapes), concatenated
        self.offsets = offsets  # int64 [N + 1]: path i is blob[offsets[i]:offsets[i + 1]]

    @classmethod
    def from_relative(cls, root: str | Path, rel: Sequence[str]) -> PathList:
        encoded = [os.fsencode(r) for r in rel]
        offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum([len(e) for e in encoded], out=offsets[1:])
        blob = np.frombuffer(b"".join(encoded), dtype=np.uint8).copy()
        return cls(root, blob, offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def relative(self, i: int) -> str:
        return os.fsdecode(self.blob[self.offsets[i] : self.offsets[i + 1]].tobytes())

    def __getitem__(self, i):  # int -> Path; slices are not needed
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for {n} files")
        return self.root / self.relative(i % n)

    def path_str(self, i: int) -> str:
        """Path i as a string (no Path object: pathlib of Python 3.11 interns every part it parses)."""
        return os.path.join(self.root, self.relative(i))

    def __iter__(self) -> Iterator[Path]:
        return (self[i] for i in range(len(self)))

    def subset(self, keep: np.ndarray) -> PathList:
        """The paths at indices ``keep`` (sorted), as a new compact list."""
        return PathList.from_relative(self.root, [self.relative(int(i)) for i in keep])

    def nbytes(self) -> int:
        return self.blob.nbytes + self.offsets.nbytes


def _scan(root: Path) -> tuple[list[str], list[str], list[int]]:
    """Relative image paths (sorted as ``sorted(Path)`` sorts them), and every directory with its mtime."""
    files: list[str] = []
    dirs: list[str] = []
    mtimes: list[int] = []
    seen: set[tuple[int, int]] = set()
    stack = [""]
    while stack:
        rel = stack.pop()
        path = os.path.join(root, rel) if rel else str(root)
        try:
            st = os.stat(path)
        except OSError:
            continue
        if (st.st_dev, st.st_ino) in seen:  # a symlink loop
            continue
        seen.add((st.st_dev, st.st_ino))
        dirs.append(rel)
        mtimes.append(st.st_mtime_ns)
        try:
            with os.scandir(path) as it:
                entries = list(it)
        except OSError as e:
            raise UnitganError(f"folder '{path}' cannot be listed: {e.strerror or e}") from None
        for entry in entries:
            sub = f"{rel}/{entry.name}" if rel else entry.name
            try:
                is_dir = entry.is_dir()  # follows symlinks, like Path.is_dir
            except OSError:
                is_dir = False
            if is_dir:
                stack.append(sub)
            elif os.path.splitext(entry.name)[1].lower() in IMAGE_EXTENSIONS:
                if not _regular(entry):  # a FIFO would block the first read for ever
                    raise UnitganError(
                        f"image '{os.path.join(path, entry.name)}' is not a regular file (a FIFO, socket or "
                        f"device); remove it from the image folder"
                    )
                files.append(sub)
    files.sort(key=lambda r: r.split("/"))  # the order of sorted(Path): part by part
    return files, dirs, mtimes


def list_images(root: str | Path) -> list[Path]:
    """Image files under ``root`` (recursive, sorted, symlink loops ignored; a FIFO, socket or device with an
    image name is refused, naming it)."""
    root = Path(root)
    return [root / rel for rel in _scan(root)[0]]


def _regular(entry: os.DirEntry) -> bool:
    """False for an entry that exists and is not a regular file (a FIFO, socket or device, or a link to one).
    A regular file (or a link to one) is told from the entry's type, without a stat call; a dangling or
    looping link counts as regular here, so that reading it reports why it cannot be read."""
    try:
        if entry.is_file():
            return True
        mode = entry.stat().st_mode  # follows links
    except OSError:
        return True
    return stat.S_ISREG(mode)


class FileIndex:
    """The images of one folder (recursive) and, once read, their (width, height)."""

    def __init__(
        self,
        root: Path,
        paths: PathList,
        sizes: np.ndarray,
        dirs: list[str],
        mtimes: list[int],
        cache: Path | None,
        scanned_ns: int,
    ):
        self.root, self.paths, self._sizes = root, paths, sizes  # sizes: int32 [N, 2], _UNREAD / _BAD
        self._dirs, self._mtimes, self.cache, self._scanned_ns = dirs, mtimes, cache, scanned_ns

    @classmethod
    def load_or_scan(cls, folder: str | Path, cache_dir: str | Path | None = None) -> FileIndex:
        """The cached index when the tree is unchanged, else a fresh scan (saved to the cache)."""
        root = Path(folder).expanduser()
        cache = _cache_path(root.resolve(), cache_dir) if cache_dir else None
        if cache is not None:
            index = cls._load(root, cache)
            if index is not None:
                log.debug("file list of %s from cache %s (%d files)", root, cache, len(index.paths))
                return index
        log.info("scanning %s for images (once; the list is cached%s)", root, f" in {cache}" if cache else " off")
        t0 = time.time()
        scanned_ns = time.time_ns()
        files, dirs, mtimes = _scan(root)
        sizes = np.full((len(files), 2), _UNREAD, dtype=np.int32)
        index = cls(root, PathList.from_relative(root, files), sizes, dirs, mtimes, cache, scanned_ns)
        log.info("found %d images in %d folders under %s (%.1f s)", len(files), len(dirs), root, time.time() - t0)
        index._save()
        return index

    def sizes(self, threads: int = 8) -> np.ndarray:
        """(width, height) of every file from its header, -1 where unreadable; read once, then cached.

        Headers are read by ``threads`` threads: the time goes into opening files, which on network disks
        is mostly waiting.
        """
        todo = np.flatnonzero(self._sizes[:, 0] == _UNREAD)
        if len(todo):
            if len(todo) > 1000:
                log.info("reading the headers of %d images in %s (once; cached)", len(todo), self.root)
            t0, last = time.time(), time.time()
            chunks = np.array_split(todo, max(1, len(todo) // 1000))
            with ThreadPoolExecutor(max(1, min(threads, len(chunks)))) as pool:
                for done, (chunk, sizes) in enumerate(zip(chunks, pool.map(self._read_sizes, chunks), strict=True)):
                    self._sizes[chunk] = sizes
                    if time.time() - last > 10:
                        log.info("  %d / %d headers read", sum(len(c) for c in chunks[: done + 1]), len(todo))
                        last = time.time()
            log.debug("read %d headers in %.1f s", len(todo), time.time() - t0)
            self._save()
        return self._sizes

    def _read_sizes(self, indices: np.ndarray) -> np.ndarray:
        out = np.full((len(indices), 2), _BAD, dtype=np.int32)
        limit = image_io.pixel_limit()  # once per chunk of headers, not per file (io's: the one limit)
        for j, i in enumerate(indices):
            try:
                out[j] = image_size(self.paths.path_str(int(i)), limit)
            except UnitganError:
                pass
        return out

    # -- the cache file ------------------------------------------------------------------------------------

    def _save(self) -> None:
        if self.cache is None:
            return
        meta = {
            "version": CACHE_VERSION,
            "root": str(self.root.resolve()),
            "scanned_ns": self._scanned_ns,
            "dirs": self._dirs,
            "mtimes": self._mtimes,
        }
        try:
            self.cache.parent.mkdir(parents=True, exist_ok=True)
            arrays = {"blob": self.paths.blob, "offsets": self.paths.offsets, "sizes": self._sizes}
            atomic_write(self.cache, lambda f: np.savez(f, meta=np.array(json.dumps(meta)), **arrays), durable=False)
        except OSError as e:
            log.warning(
                "file-list cache %s not written (%s); the folder will be scanned again next time", self.cache, e
            )

    @classmethod
    def _load(cls, root: Path, cache: Path) -> FileIndex | None:
        if not cache.is_file():
            return None
        try:
            with np.load(cache, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                blob, offsets, sizes = z["blob"], z["offsets"], z["sizes"]
        except (OSError, ValueError, KeyError) as e:
            log.warning("file-list cache %s unreadable (%s): scanning again", cache, e)
            return None
        if meta.get("version") != CACHE_VERSION or meta.get("root") != str(root.resolve()):
            return None
        # a directory changed within a timestamp tick of the scan may have changed again unseen: rescan
        if max(meta["mtimes"], default=0) >= meta["scanned_ns"] - RACY_NS:
            return None
        for rel, mtime in zip(meta["dirs"], meta["mtimes"], strict=True):
            try:
                if os.stat(os.path.join(root, rel) if rel else root).st_mtime_ns != mtime:
                    log.info("%s changed since its file list was cached: scanning again", root)
                    return None
            except OSError:
                return None
        return cls(root, PathList(root, blob, offsets), sizes, meta["dirs"], meta["mtimes"], cache, meta["scanned_ns"])


def _cache_path(root: Path, cache_dir: str | Path) -> Path:
    digest = hashlib.sha1(os.fsencode(str(root))).hexdigest()[:16]
    return Path(cache_dir).expanduser() / "filelists" / f"{root.name}-{digest}.npz"
