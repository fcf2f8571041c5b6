"""Download and extract the real datasets (paper preset): checked, streamed, never half-written.

`download` fetches a URL with urllib into a temporary file beside the destination and renames
it only once the whole body arrived and its sha256 matches: the published checksum if one is
given, and/or a lock file that pins the checksum of the first download (for archives without a
published checksum, such as fairseq's IWSLT14 mirror). `extract` unpacks one top-level folder of
a tar archive safely (tarfile's "data" filter) and atomically.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import lzma
import re
import tarfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from tqdm import tqdm

from comma.errors import InputError
from comma.io import atomic_dir, atomic_path

log = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 20
TIMEOUT_SECONDS = 60.0  # per socket operation, not for the whole transfer
USER_AGENT = "comma-study (Python urllib)"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class DownloadError(RuntimeError):
    """A download that failed or did not verify: names the URL and the cause."""

    def __init__(self, url: str, message: str):
        self.url = url
        self.reason = message
        super().__init__(f"{url}: {message}")


def read_lock(lock_path: str | Path) -> str | None:
    """The sha256 pinned in a lock file (`<sha256>  <file name>`), or None if there is none yet."""
    lock_path = Path(lock_path)
    if not lock_path.exists():
        return None
    for number, line in enumerate(lock_path.read_text(encoding="utf-8").splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        digest = line.split()[0].lower()
        if not _SHA256.match(digest):
            raise InputError(
                lock_path, f"expected a sha256 (64 hex digits), got {digest!r}", line=number
            )
        return digest
    raise InputError(lock_path, "lock file has no sha256 line; delete it to record a new one")


def write_lock(lock_path: str | Path, digest: str, url: str, file_name: str) -> None:
    """Record `digest` in `lock_path` in sha256sum's format, with the URL as a comment."""
    with atomic_path(lock_path) as tmp:
        tmp.write_text(
            f"# sha256 of the first download of {url}; later downloads must match.\n"
            f"# Delete this file to accept a new upstream version.\n"
            f"{digest}  {file_name}\n",
            encoding="utf-8",
        )


def _check_digest(url: str, got: str, sha256: str | None, lock_path: Path | None) -> None:
    if sha256 is not None and got != sha256.lower():
        raise DownloadError(url, f"checksum mismatch: expected sha256 {sha256.lower()}, got {got}")
    if lock_path is not None:
        locked = read_lock(lock_path)
        if locked is not None and got != locked:
            raise DownloadError(
                url,
                f"checksum mismatch: expected sha256 {locked} (recorded in lock file "
                f"{lock_path} by the first download), got {got}; the file changed upstream or "
                f"was corrupted in transit (delete the lock file to accept the new version)",
            )


def _check_archive(
    url: str, path: Path, members: Sequence[str], dest: Path, lock: Path | None, digest: str
) -> None:
    """Raise DownloadError unless `path` (the download of `url` to `dest`) is a readable tar
    archive that holds every one of `members`. The error names the archive, what it lacks, and
    the lock file: not written, or (pinned by an earlier download before every member was
    checked) to be deleted."""
    head = path.read_bytes()[:64]
    missing = set(members)
    try:
        with tarfile.open(path, "r:*") as tar:
            for info in tar:
                missing.discard(info.name.removeprefix("./"))
                if not missing:
                    return
    except (tarfile.TarError, EOFError, OSError) as err:
        raise DownloadError(
            url, f"not a readable tar archive ({err}); it starts with {head[:40]!r}"
        ) from None
    message = (
        f"the archive for {dest} holds no {', '.join(sorted(missing))} (it must hold "
        f"{', '.join(members)}): not the dataset's complete archive; {dest} was not written"
    )
    if lock is not None and read_lock(lock) == digest:
        message += (
            f", but the lock file {lock} pins this incomplete archive's sha256: delete the lock "
            "file and run again"
        )
    elif lock is not None:
        message += f" and nothing was recorded in the lock file {lock}"
    raise DownloadError(url, message)


def download(
    url: str,
    dest: str | Path,
    *,
    sha256: str | None = None,
    lock_path: str | Path | None = None,
    members: Sequence[str] = (),
    timeout: float = TIMEOUT_SECONDS,
) -> str:
    """Download `url` to `dest` and return its sha256 (hex).

    `sha256`: the expected checksum; a mismatch raises DownloadError.
    `lock_path`: a lock file pinning the checksum. If it exists, the download must match it;
    if not, the verified download's checksum is recorded there (sha256sum's format).
    `members`: the files the archive must hold (a tar, any compression), every one checked
    before the checksum is pinned, so an HTML error page, a cut transfer or an incomplete
    archive never becomes the pin.
    On any failure (HTTP error, connection error, body shorter than Content-Length, checksum
    mismatch) `dest` is left untouched and no partial file remains.
    """
    dest = Path(dest)
    lock = Path(lock_path) if lock_path is not None else None
    if sha256 is not None and not _SHA256.match(sha256.lower()):
        raise ValueError(f"sha256 for {url} must be 64 hex digits, got {sha256!r}")
    if lock is not None:
        read_lock(lock)  # a malformed lock file fails before a long download, not after

    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    with atomic_path(dest) as tmp:
        try:
            response = urllib.request.urlopen(request, timeout=timeout)
        except urllib.error.HTTPError as exc:
            raise DownloadError(url, f"HTTP error {exc.code} {exc.reason}") from exc
        except urllib.error.URLError as exc:
            raise DownloadError(url, f"cannot connect: {exc.reason}") from exc
        except (TimeoutError, http.client.HTTPException, OSError) as exc:
            raise DownloadError(url, f"request failed: {exc!r}") from exc

        with response:
            length_header = response.headers.get("Content-Length")
            expected_bytes = int(length_header) if length_header is not None else None
            hasher = hashlib.sha256()
            received = 0
            with (
                tmp.open("wb") as out,
                tqdm(
                    total=expected_bytes,
                    unit="B",
                    unit_scale=True,
                    unit_divisor=1024,
                    desc=dest.name,
                    mininterval=1.0,
                ) as progress,
            ):
                while True:
                    try:
                        chunk = response.read(CHUNK_BYTES)
                    except (TimeoutError, http.client.HTTPException, OSError) as exc:
                        raise DownloadError(
                            url, f"connection failed after {received} bytes: {exc!r}"
                        ) from exc
                    if not chunk:
                        break
                    out.write(chunk)
                    hasher.update(chunk)
                    received += len(chunk)
                    progress.update(len(chunk))

        # urllib returns an early end of stream as a normal end: compare with the header.
        if expected_bytes is not None and received != expected_bytes:
            raise DownloadError(
                url,
                f"truncated download: received {received} bytes but Content-Length "
                f"announced {expected_bytes}",
            )
        if received == 0:
            raise DownloadError(url, "empty response body")
        digest = hasher.hexdigest()
        if members:
            _check_archive(url, tmp, members, dest, lock, digest)
        _check_digest(url, digest, sha256, lock)
        if lock is not None and read_lock(lock) is None:
            write_lock(lock, digest, url, dest.name)
            log.info("recorded sha256 %s of %s in lock file %s", digest, url, lock)
    log.info("downloaded %s (%d bytes, sha256 %s) to %s", url, received, digest, dest)
    return digest


def _member_parts(archive: Path, name: str) -> tuple[str, ...]:
    """Path components of a member name without '.'; refuses absolute paths and '..'."""
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts:
        raise InputError(archive, f"unsafe member path {name!r} (absolute or with '..')")
    return tuple(part for part in path.parts if part != ".")


@dataclass
class _ExtractTally:
    top_names: set[str] = field(default_factory=set)  # first components seen, for the error
    found_top: bool = False
    extracted: int = 0
    skipped: int = 0


def _members_under(
    tar: tarfile.TarFile,
    archive: Path,
    top: tuple[str, ...],
    raw: BinaryIO,
    progress: tqdm,
    tally: _ExtractTally,
) -> Iterator[tarfile.TarInfo]:
    """Yield the members below `top`, renamed relative to it, in archive order. Lazily, so that
    extractall reads a compressed archive in one pass instead of listing it first."""
    for member in tar:
        progress.update(raw.tell() - progress.n)  # compressed bytes read so far
        parts = _member_parts(archive, member.name)
        if parts:
            tally.top_names.add(parts[0])
        if parts[: len(top)] != top:
            tally.skipped += 1
            continue
        tally.found_top = True
        relative = parts[len(top) :]
        if not relative:  # the top-level folder's own entry
            continue
        changes = {"name": "/".join(relative)}
        if member.islnk():  # hard-link targets are member names: rebase them too
            target = _member_parts(archive, member.linkname)
            if target[: len(top)] != top:
                raise InputError(
                    archive, f"hard link {member.name!r} points outside {'/'.join(top)}/"
                )
            changes["linkname"] = "/".join(target[len(top) :])
        tally.extracted += 1
        yield member.replace(**changes, deep=False)


def extract(archive: str | Path, dest_dir: str | Path, top_level: str) -> Path:
    """Extract the folder `top_level` of the tar archive `archive` (any compression) so that its
    contents become `dest_dir`; return `dest_dir`.

    Members outside `top_level` are skipped. Members with absolute paths or '..', links leaving
    the destination and special files are refused (tarfile's "data" filter). The extraction is
    atomic: on any failure nothing is left at `dest_dir`. Raises InputError naming the archive if
    it is unreadable, corrupt, unsafe, or has no `top_level` folder.
    """
    archive = Path(archive)
    dest_dir = Path(dest_dir)
    top = _member_parts(archive, top_level)
    if not top:
        raise ValueError(f"top_level must name a folder inside {archive}, got {top_level!r}")
    if not archive.is_file():
        raise InputError(archive, "archive not found")
    size = archive.stat().st_size

    tally = _ExtractTally()
    with (
        archive.open("rb") as raw,
        atomic_dir(dest_dir) as tmp,
        tqdm(
            total=size,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=f"extract {archive.name}",
            mininterval=1.0,
        ) as progress,
    ):
        try:
            with tarfile.open(fileobj=raw, mode="r:*") as tar:
                members = _members_under(tar, archive, top, raw, progress, tally)
                tar.extractall(tmp, members=members, filter="data")
        except (tarfile.TarError, EOFError, OSError, zlib.error, lzma.LZMAError) as exc:
            # unreadable or corrupt stream, truncated data, FilterError (unsafe link, device)
            raise InputError(archive, f"cannot extract: {type(exc).__name__}: {exc}") from exc
        if not tally.found_top:
            found = ", ".join(f"{name}/" for name in sorted(tally.top_names)[:10])
            raise InputError(
                archive,
                f"expected top-level folder {'/'.join(top)}/ not found; "
                f"the archive's top level has: {found or 'nothing'}",
            )
        progress.update(size - progress.n)
    log.info(
        "extracted %d members of %s/ from %s to %s (%d outside it skipped)",
        tally.extracted,
        "/".join(top),
        archive,
        dest_dir,
        tally.skipped,
    )
    return dest_dir
