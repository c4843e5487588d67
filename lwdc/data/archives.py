"""Safe, capped, once-only unpacking of ``.tar.gz`` archives into the cache folder.

Archives come from users and the network: every member is checked before it is written (no absolute paths,
``..``, links or devices) and the bytes written are capped, so a hostile or mistaken archive cannot write outside
its folder or fill the disk.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tarfile
import zlib
from pathlib import Path, PurePosixPath, PureWindowsPath

from .errors import DataLayoutError, UnsafeArchiveError

__all__ = ["unpack", "max_unpack_bytes", "DEFAULT_MAX_UNPACK_BYTES", "stem"]

DEFAULT_MAX_UNPACK_BYTES = 4 << 30          # CIFAR-10/100 unpack to under 200 MB; 4 GiB leaves room for more
ENV_MAX_UNPACK_BYTES = "LWDC_MAX_UNPACK_BYTES"
_MARKER = ".lwdc-unpacked"


def max_unpack_bytes(value: int | None = None) -> int:
    """The unpack cap: ``value`` if given, else ``$LWDC_MAX_UNPACK_BYTES``, else 4 GiB."""
    if value is None:
        raw = os.environ.get(ENV_MAX_UNPACK_BYTES, "").strip()
        try:
            value = int(raw) if raw else DEFAULT_MAX_UNPACK_BYTES
        except ValueError:
            raise ValueError(f"${ENV_MAX_UNPACK_BYTES} must be a whole number of bytes, got {raw!r}") from None
    if value < 0:
        raise ValueError(f"the unpack cap must be >= 0 bytes, got {value}")
    return int(value)


def _check_member(archive: Path, m: tarfile.TarInfo) -> None:
    name = m.name
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if (name.startswith(("/", "\\")) or PureWindowsPath(name).drive or ".." in parts
            or not (m.isfile() or m.isdir())):
        raise UnsafeArchiveError(f"{archive}: refusing to unpack member {name!r} (absolute path, '..', link or "
                                 "special file); only plain files and folders inside the archive are accepted")


def stem(archive: Path) -> str:
    """The archive's name without ``.tar.gz``/``.tgz``: the folder it unpacks to."""
    name = archive.name
    for suffix in (".tar.gz", ".tgz"):
        if name.lower().endswith(suffix):
            return name[:-len(suffix)]
    return name


def _extract(archive: Path, dest: Path, max_bytes: int) -> None:
    """One streaming pass over the archive: check each member, then write it under ``dest``.

    Checked members have relative paths without ``..`` and are plain files or folders, and no link is ever
    created, so every write lands inside ``dest``. Sizes come from the member headers, which bound what
    ``extractfile`` yields, so the cap holds before a byte of an oversized member is written.
    """
    total = 0
    try:
        with tarfile.open(archive, "r|*") as tar:
            for m in tar:
                _check_member(archive, m)
                path = dest.joinpath(*PurePosixPath(m.name.replace("\\", "/")).parts)
                if m.isdir():
                    path.mkdir(parents=True, exist_ok=True)
                    continue
                total += m.size
                if total > max_bytes:
                    raise UnsafeArchiveError(
                        f"{archive}: refusing to unpack more than {max_bytes} bytes (reached at member {m.name!r}); "
                        f"raise the cap with max_unpack_bytes= or ${ENV_MAX_UNPACK_BYTES} if the archive is trusted")
                path.parent.mkdir(parents=True, exist_ok=True)
                with tar.extractfile(m) as src, open(path, "wb") as out:
                    shutil.copyfileobj(src, out)
    except (tarfile.TarError, EOFError, zlib.error) as exc:
        raise DataLayoutError(f"{archive} is not a readable .tar.gz archive ({exc})") from None


@contextlib.contextmanager
def _exclusive(lock_path: Path):
    """Hold an exclusive advisory lock on ``lock_path`` (POSIX); elsewhere, no lock."""
    try:
        import fcntl
    except ImportError:         # Windows: concurrent first unpacks are not serialised there
        yield
        return
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def unpack(archive: Path, cache_dir: Path, max_bytes: int | None = None) -> Path:
    """Unpack ``archive`` once into ``cache_dir/<stem>/`` and return that folder.

    A marker records which archive (path, size, mtime) was unpacked, so a changed archive is unpacked again.
    Extraction goes to a temporary folder renamed at the end, so an interrupted unpack never looks finished;
    an unsafe member aborts it (nothing outside that folder is ever written) and the folder is removed.
    Processes that start at once (two benchmark runs) take turns through a lock file: one unpacks, the others
    then find its marker (without it, both replaced the folder and one deleted files under the other).
    At most ``max_bytes`` are written (``max_unpack_bytes``): a larger archive is refused and its partial unpack
    removed.
    """
    cap = max_unpack_bytes(max_bytes)
    archive = Path(archive).resolve()
    st = archive.stat()
    stamp = f"{archive}:{st.st_size}:{st.st_mtime_ns}"
    target = Path(cache_dir) / stem(archive)
    marker = target / _MARKER
    if marker.is_file() and marker.read_text() == stamp:
        return target
    with _exclusive(target.with_name(f".{target.name}.lock")):
        if marker.is_file() and marker.read_text() == stamp:     # another process unpacked it meanwhile
            return target
        if target.exists() and not marker.is_file():
            raise DataLayoutError(f"{target} exists but was not unpacked by lwdc from {archive}; remove it or pass "
                                  "another cache_dir")
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            _extract(archive, tmp, cap)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        (tmp / _MARKER).write_text(stamp)
        if target.exists():   # an older unpack of a changed archive (it carries our marker)
            shutil.rmtree(target)
        os.replace(tmp, target)
    return target


