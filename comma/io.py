"""Atomic writes: an artifact is either complete under its final name or absent."""

from __future__ import annotations

import contextlib
import glob
import json
import os
import pickle
import shutil
import tempfile
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from comma.errors import InputError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def remove_stale_temporaries(path: str | Path) -> list[Path]:
    """Remove what a killed writer of `path` left beside it (``.<name>.*.tmp`` files or
    folders of :func:`atomic_path` / :func:`atomic_dir`); returns them. Only one job writes an
    output at a time (Snakemake locks its outputs), so any such leftover is stale."""
    path = Path(path)
    removed = []
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        if stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)
        removed.append(stale)
    return removed


def _discard(tmp: Path, error: BaseException) -> None:
    """Remove a failed write's temporary; a failure to do so (a full or read-only disk) is
    noted on the original error, never raised in its place."""
    try:
        if tmp.is_dir() and not tmp.is_symlink():
            shutil.rmtree(tmp)
        else:
            tmp.unlink(missing_ok=True)
    except OSError as cleanup:
        error.add_note(f"and removing the temporary {tmp} failed too: {cleanup}")


def _naming_the_file(error: OSError, path: Path, tmp: Path) -> OSError:
    """`error` of a write into `tmp` as an OSError naming `path`: a failed ``write()`` (a full
    disk: ``[Errno 28] No space left on device``) names no file at all, and an error naming
    the temporary names a file that is gone by the time anyone reads the message."""
    if error.filename not in (None, str(tmp)):
        return error
    reason = error.strerror or str(error)
    if error.errno is None:
        return OSError(f"{reason}, while writing {path}")
    return OSError(error.errno, f"{reason}, while writing {path}")


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it to `path` only if the block succeeds.
    A failed block leaves neither the temporary nor a partial `path`; an OSError of the block
    that names no file (a full disk) is raised as one naming `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        # mkstemp creates the file private (0600); artifacts get the usual permissions.
        tmp_path.chmod(0o666 & ~_umask())
        yield tmp_path
        os.replace(tmp_path, path)
    except OSError as error:
        _discard(tmp_path, error)
        named = _naming_the_file(error, path, tmp_path)
        if named is error:
            raise
        raise named from error
    except BaseException as error:
        _discard(tmp_path, error)
        raise


@contextlib.contextmanager
def atomic_files(out_dir: str | Path, names: Sequence[str]) -> Iterator[Path]:
    """Yield a temporary folder beside `out_dir` (``.<name>.*.tmp``, as :func:`atomic_dir`) to
    write exactly the files `names` into; they are moved into `out_dir` together, only when the
    block succeeds and wrote exactly them, and other files of `out_dir` stay. The temporary
    folder never stays, and what a killed earlier writer left beside `out_dir` is removed
    first (:func:`remove_stale_temporaries`)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out_dir)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        yield tmp
        written = sorted(p.name for p in tmp.iterdir())
        if written != sorted(names):
            raise RuntimeError(f"{out_dir}: wrote {written}, expected {sorted(names)}")
        for name in names:
            os.replace(tmp / name, out_dir / name)
    except BaseException as error:
        _discard(tmp, error)
        raise
    shutil.rmtree(tmp)


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary directory beside `path`; it becomes `path` only if the block succeeds.
    Leftovers of a killed earlier writer of `path` are removed first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        tmp.chmod(0o777 & ~_umask())  # mkdtemp creates it private (0700)
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException as error:
        _discard(tmp, error)
        raise


def write_json(path: str | Path, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def write_lines(path: str | Path, lines: list[str]) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")


def torch_save(obj: Any, path: str | Path) -> None:
    """`obj` as a torch file at `path`, written atomically and byte for byte the same for the
    same content. Given a path, torch.save names the archive's root folder after the file,
    here the random temporary name; saving through a file object names it "archive", so the
    sha256 of the file that a run's fingerprint records does not change when an artifact is
    rebuilt identically."""
    import torch  # here, not above: the workflow imports this module to build its DAG

    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        try:
            torch.save(obj, handle)
        except RuntimeError as error:
            # torch's writer reports a failed write (a full disk) by byte positions only
            # ("unexpected pos 12928 vs 12822"); atomic_path adds the file's name
            free = shutil.disk_usage(tmp.parent).free
            raise OSError(
                f"torch could not write the file ({_first_line(error)}; {free:,} bytes free "
                "on its disk)"
            ) from error


def torch_load(path: str | Path, mmap: bool = False) -> Any:
    """A torch file's content on the CPU (weights only). With `mmap`, tensors stay in the file
    and pages are read as they are touched: for corpus-sized stores (a teacher's per-head
    attention maps of LJSpeech are ~30 GB in float16) of which a job reads a batch at a time.

    A missing, truncated or foreign file raises :class:`~comma.errors.InputError` naming it,
    instead of torch's message, which names neither the file nor what to do."""
    import torch  # here, not above: the workflow imports this module to build its DAG

    path = Path(path)
    if not path.is_file():
        raise InputError(path, "file not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except PermissionError as error:
        raise InputError(path, f"cannot be read: {error.strerror}") from error
    # A plain pickle (torch's legacy format) that is not a tensor save fails with OSError.
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, zipfile.BadZipFile) as error:
        raise InputError(
            path,
            "not a torch file a weights-only load can read (truncated, damaged or not written "
            f"by comma-study): delete it and re-run the job that writes it ({_first_line(error)})",
        ) from error


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:200]


def write_csv(table, path: str | Path, digits: int = 6) -> None:
    """A pandas DataFrame as CSV at `path`, written atomically, floats to `digits`
    significant digits."""
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False, float_format=f"%.{digits}g")
