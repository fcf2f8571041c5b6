"""Manifests of the raw corpus folders: every file's relative name, size and sha256.

A raw corpus (a generated mini corpus, or an extracted archive of the paper preset) is a
Snakemake `directory()` output, which Snakemake dates by a timestamp file of its own: a file
edited in place inside it changes nothing Snakemake looks at, and a re-run said "Nothing to be
done". So each folder gets a manifest, `<folder>.manifest.json` beside it (`rules/prepare.smk`,
rule `corpus_manifest`), and the rules that read the corpus take the manifest as their input:

- `folder_state(folder)` is a digest of the files' names, sizes and modification times (a stat
  of each, no reading): the manifest rule's parameter. An edited, added or removed file changes
  it, Snakemake reruns a job whose parameters changed, and the rewritten manifest reruns what
  reads the corpus (a file only touched does so too, as any touched input does in Snakemake:
  it plans the readers before the manifest is rewritten).
- `write_manifest(folder, path)` hashes every file.
- `check_manifest(path)` is what a reading rule calls before it starts (through the rule
  scripts' `rule_log`): the folder must hold exactly the listed files with their sizes and
  sha256, or an InputError names the first file that differs and says what to do. It catches
  what the digest cannot see (an edit that kept the size and modification time, or one made
  while the workflow ran).

The manifest is JSON, one file per line: `{"folder": ..., "files": [[name, size, sha256], ...]}`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

from comma.errors import InputError
from comma.io import atomic_path

log = logging.getLogger(__name__)
SUFFIX = ".manifest.json"
# Snakemake's own marker in a directory() output (its modification time is the folder's).
SKIPPED = frozenset({".snakemake_timestamp"})


def manifest_of(folder: str | Path) -> Path:
    """The manifest file of a corpus folder: `<folder>.manifest.json` beside it."""
    return Path(f"{folder}{SUFFIX}")


def folder_of(manifest: str | Path) -> Path:
    """The corpus folder a manifest describes."""
    name = str(manifest)
    if not name.endswith(SUFFIX):
        raise ValueError(f"{manifest} is no corpus manifest (*{SUFFIX})")
    return Path(name.removesuffix(SUFFIX))


def corpus_files(folder: str | Path) -> list[str]:
    """The relative names (POSIX) of every file under `folder`, sorted, Snakemake's marker
    left out."""
    folder = Path(folder)
    names = []
    for parent, dirs, files in os.walk(folder):
        dirs.sort()
        for name in files:
            relative = (Path(parent) / name).relative_to(folder).as_posix()
            if relative not in SKIPPED:
                names.append(relative)
    return sorted(names)


def folder_state(folder: str | Path) -> str:
    """A digest of the names, sizes and modification times of the files under `folder`
    (`"absent"` before it exists): cheap, one stat per file, and changed by any edit."""
    folder = Path(folder)
    if not folder.is_dir():
        return "absent"
    digest = hashlib.sha256()
    for name in corpus_files(folder):
        stat = (folder / name).stat()
        digest.update(f"{name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(folder: str | Path, path: str | Path) -> int:
    """Write the manifest of `folder` (every file's name, size and sha256) to `path`
    atomically; returns the number of files."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(folder, "corpus folder not found")
    names = corpus_files(folder)
    if not names:
        raise InputError(folder, "corpus folder holds no file")
    rows = [
        json.dumps([name, (folder / name).stat().st_size, file_sha256(folder / name)])
        for name in names
    ]
    with atomic_path(path) as tmp:
        tmp.write_text(
            f'{{"folder": {json.dumps(str(folder))}, "files": [\n' + ",\n".join(rows) + "\n]}\n",
            encoding="utf-8",
        )
    log.info("%s: %d files listed in %s", folder, len(names), path)
    return len(names)


def read_manifest(path: str | Path) -> dict[str, tuple[int, str]]:
    """name -> (size, sha256) of a manifest; InputError naming it if it is not one."""
    try:
        files = json.loads(Path(path).read_text(encoding="utf-8"))["files"]
        return {name: (int(size), str(sha256)) for name, size, sha256 in files}
    except (ValueError, KeyError, TypeError) as err:
        raise InputError(
            path, f"not a corpus manifest ({err}); delete it to write it anew"
        ) from None


def check_manifest(path: str | Path) -> int:
    """Check that the folder of manifest `path` holds exactly the files it lists, with their
    sizes and sha256; returns the number of files. InputError naming the first file that
    differs (missing, added, another size or content), and what to do."""
    path = Path(path)
    folder = folder_of(path)
    listed = read_manifest(path)
    if not folder.is_dir():
        raise InputError(folder, f"corpus folder of the manifest {path} not found")
    present = set(corpus_files(folder))
    differences = []
    for name in sorted(present | set(listed)):
        if name not in listed:
            differences.append((name, "added"))
        elif name not in present:
            differences.append((name, "removed"))
        else:
            size, sha256 = listed[name]
            now = (folder / name).stat().st_size
            if now != size:
                differences.append((name, f"size changed ({size} -> {now} bytes)"))
            elif file_sha256(folder / name) != sha256:
                differences.append((name, f"content changed (same size, {size} bytes)"))
    if differences:
        name, cause = differences[0]
        more = f" (and {len(differences) - 1} more file(s))" if len(differences) > 1 else ""
        raise InputError(
            folder / name,
            f"{cause} since the corpus manifest {path} was written{more}. To use the folder "
            f"as it is now, rerun with `--forcerun corpus_manifest` (what reads the corpus "
            f"reruns after it); to restore the corpus instead, delete {folder} and rerun (it is "
            "generated or extracted again)",
        )
    log.info("%s: %d files as listed in %s", folder, len(listed), path)
    return len(listed)
