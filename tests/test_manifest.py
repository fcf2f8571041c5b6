"""Manifests of the raw corpus folders (comma.data.manifest, rule corpus_manifest): a file
edited in place inside a corpus folder reruns what reads it, and one Snakemake cannot see is
named by the reading rule's check."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from conftest import TINY_CONFIG, snakemake

from comma.data.manifest import (
    check_manifest,
    folder_of,
    folder_state,
    manifest_of,
    read_manifest,
    write_manifest,
)
from comma.errors import InputError


def corpus(root: Path) -> Path:
    (root / "wavs").mkdir(parents=True)
    (root / "metadata.csv").write_text("LJ1|a|A\nLJ2|b|B\n", encoding="utf-8")
    (root / "wavs" / "LJ1.wav").write_bytes(b"RIFF" + bytes(100))
    (root / "wavs" / "LJ2.wav").write_bytes(b"RIFF" + bytes(200))
    (root / ".snakemake_timestamp").write_text("")  # Snakemake's marker: not listed
    return root


def edit_keeping_size_and_time(path: Path, old: bytes, new: bytes) -> None:
    assert len(old) == len(new)
    times = path.stat()
    data = path.read_bytes()
    assert old in data
    path.write_bytes(data.replace(old, new, 1))
    os.utime(path, ns=(times.st_atime_ns, times.st_mtime_ns))


def test_manifest_lists_every_file_with_size_and_sha256(tmp_path):
    folder = corpus(tmp_path / "LJSpeech-1.1")
    path = manifest_of(folder)
    assert path == tmp_path / "LJSpeech-1.1.manifest.json" and folder_of(path) == folder
    assert write_manifest(folder, path) == 3
    assert json.loads(path.read_text())["folder"] == str(folder)
    assert read_manifest(path) == {
        name: (
            (folder / name).stat().st_size,
            hashlib.sha256((folder / name).read_bytes()).hexdigest(),
        )
        for name in ("metadata.csv", "wavs/LJ1.wav", "wavs/LJ2.wav")
    }
    assert check_manifest(path) == 3
    (folder / ".snakemake_timestamp").write_text("touched")
    assert check_manifest(path) == 3


@pytest.mark.parametrize(
    ("change", "named", "cause"),
    [
        (
            lambda f: edit_keeping_size_and_time(f / "metadata.csv", b"A", b"X"),
            "metadata.csv",
            "content changed (same size, 16 bytes)",
        ),
        (
            lambda f: (f / "wavs" / "LJ2.wav").write_bytes(b"RIFF"),
            "wavs/LJ2.wav",
            "size changed (204 -> 4 bytes)",
        ),
        (lambda f: (f / "wavs" / "LJ3.wav").write_bytes(b"RIFF"), "wavs/LJ3.wav", "added"),
        (lambda f: (f / "wavs" / "LJ1.wav").unlink(), "wavs/LJ1.wav", "removed"),
    ],
)
def test_a_changed_file_is_named_with_what_to_do(tmp_path, change, named, cause):
    folder = corpus(tmp_path / "LJSpeech-1.1")
    path = manifest_of(folder)
    write_manifest(folder, path)
    change(folder)
    with pytest.raises(InputError) as err:
        check_manifest(path)
    assert err.value.path == folder / named
    assert str(err.value) == (
        f"{folder / named}: {cause} since the corpus manifest {path} was written. To use the "
        "folder as it is now, rerun with `--forcerun corpus_manifest` (what reads the corpus "
        f"reruns after it); to restore the corpus instead, delete {folder} and rerun (it is "
        "generated or extracted again)"
    )


def test_more_changed_files_are_counted(tmp_path):
    folder = corpus(tmp_path / "c")
    write_manifest(folder, manifest_of(folder))
    (folder / "wavs" / "LJ1.wav").unlink()
    (folder / "wavs" / "LJ2.wav").unlink()
    with pytest.raises(InputError, match=r"LJ1.wav: removed .* \(and 1 more file\(s\)\)"):
        check_manifest(manifest_of(folder))


def test_folder_state_follows_names_sizes_and_times_only(tmp_path):
    folder = tmp_path / "c"
    assert folder_state(folder) == "absent"
    corpus(folder)
    before = folder_state(folder)
    (folder / ".snakemake_timestamp").write_text("touched")
    assert folder_state(folder) == before
    wav = folder / "wavs" / "LJ1.wav"
    os.utime(wav, ns=(wav.stat().st_atime_ns, wav.stat().st_mtime_ns + 1))
    touched = folder_state(folder)
    assert touched != before
    (folder / "extra.txt").write_text("x")
    assert folder_state(folder) not in (before, touched)


def test_bad_manifest_and_folder_are_named(tmp_path):
    broken = tmp_path / "c.manifest.json"
    broken.write_text('{"files": [["a", 1]]}')
    with pytest.raises(InputError, match="not a corpus manifest") as err:
        check_manifest(broken)
    assert err.value.path == broken
    with pytest.raises(InputError, match="corpus folder not found"):
        write_manifest(tmp_path / "missing", tmp_path / "missing.manifest.json")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="holds no file"):
        write_manifest(tmp_path / "empty", tmp_path / "empty.manifest.json")
    assert not (tmp_path / "missing.manifest.json").exists()
    assert not (tmp_path / "empty.manifest.json").exists()


# --- through Snakemake ----------------------------------------------------------------------

TARGET = "work/data/nmt/stats.json"
TRAIN_EN = Path("resources/iwslt14/de-en/train.tags.de-en.en")


def run(workdir: Path, *args: str, check: bool = True):
    return snakemake(workdir, TARGET, *args, "--configfile", str(TINY_CONFIG), check=check)


def planned(result) -> dict[str, int]:
    table = result.stdout.split("Job stats:")[1].split("total")[0]
    return {line.split()[0]: int(line.split()[1]) for line in table.splitlines()[3:] if line}


def first_training_line(path: Path) -> bytes:
    return next(line for line in path.read_bytes().splitlines() if not line.startswith(b"<"))


@pytest.mark.slow
def test_an_in_place_edit_reruns_what_reads_the_corpus(tmp_path):
    run(tmp_path, "--cores", "1")
    manifest = tmp_path / "resources" / "iwslt14" / "de-en.manifest.json"
    assert "train.tags.de-en.en" in manifest.read_text()
    assert "Nothing to be done" in run(tmp_path, "-n").stdout

    # An edit Snakemake alone would not see (a directory() output is dated by its marker file):
    # the manifest's parameter changes, the manifest and what reads the corpus rerun.
    train_en = tmp_path / TRAIN_EN
    line = first_training_line(train_en)
    train_en.write_bytes(train_en.read_bytes().replace(line, line.upper(), 1))
    plan = run(tmp_path, "-n")
    assert planned(plan) == {"corpus_manifest": 1, "prepare_nmt": 1}
    assert "Params have changed since last execution" in plan.stdout
    run(tmp_path, "--cores", "1")
    assert "Nothing to be done" in run(tmp_path, "-n").stdout

    # An edit that keeps the size and the modification time: Snakemake plans nothing, and a
    # rerun of the reader stops before it starts, naming the file and what to do.
    line = first_training_line(train_en)
    edit_keeping_size_and_time(train_en, line, line.lower())
    assert "Nothing to be done" in run(tmp_path, "-n").stdout
    failed = run(tmp_path, "--cores", "1", "--forcerun", "prepare_nmt", check=False)
    assert failed.returncode != 0
    assert (
        f"InputError: {TRAIN_EN}: content changed (same size, {train_en.stat().st_size} bytes) "
        f"since the corpus manifest resources/iwslt14/de-en.manifest.json was written. To use "
        "the folder as it is now, rerun with `--forcerun corpus_manifest`"
    ) in failed.stdout + failed.stderr
    assert not (tmp_path / TARGET).exists()  # nothing half-written

    # What the message says to do: the manifest is written anew, the reader reruns.
    fixed = run(tmp_path, "--cores", "1", "--forcerun", "corpus_manifest")
    assert "corpus_manifest" in fixed.stdout + fixed.stderr
    assert (tmp_path / TARGET).is_file()
    assert check_manifest(manifest) > 0
    assert "Nothing to be done" in run(tmp_path, "-n").stdout
