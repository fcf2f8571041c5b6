"""comma.io: atomic writes leave a complete artifact or nothing, clean up after a killed
writer, and never hide the error that stopped a write."""

from __future__ import annotations

import errno
import os

import pytest

from comma.io import atomic_dir, atomic_path, remove_stale_temporaries, torch_load, torch_save


def test_a_failed_write_leaves_nothing(tmp_path):
    target = tmp_path / "out.txt"
    with pytest.raises(RuntimeError, match="boom"), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_a_killed_writers_leftovers_are_removed_when_the_output_is_written_again(tmp_path):
    target = tmp_path / "corpus"
    stale_dir = tmp_path / ".corpus.abc123.tmp"  # what a SIGKILLed atomic_dir leaves
    (stale_dir / "wavs").mkdir(parents=True)
    (stale_dir / "wavs" / "a.wav").write_bytes(b"x" * 100)
    stale_file = tmp_path / ".corpus.xyz.tmp"
    stale_file.write_text("half")
    other = tmp_path / ".corpus2.abc.tmp"  # another output's temporary: not ours
    other.write_text("keep")
    with atomic_dir(target) as tmp:
        (tmp / "done").write_text("ok")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".corpus2.abc.tmp", "corpus"]
    assert (target / "done").read_text() == "ok"
    assert remove_stale_temporaries(target) == []


def test_the_original_error_survives_a_failing_cleanup(tmp_path, monkeypatch):
    import comma.io

    def no_space(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    with pytest.raises(OSError, match="No space left") as error, atomic_dir(tmp_path / "d") as tmp:
        (tmp / "part").write_text("x")
        monkeypatch.setattr(comma.io.shutil, "rmtree", no_space)
        raise OSError(errno.ENOSPC, "No space left on device")
    notes = " ".join(getattr(error.value, "__notes__", []))
    assert "removing the temporary" in notes and "Read-only" in notes


def test_torch_save_writes_the_same_bytes_for_the_same_content(tmp_path):
    """A rebuilt artifact must keep its sha256 (the resume fingerprint records it): the
    atomic write's random temporary name must not end up inside the file."""
    import hashlib

    import torch

    content = {"values": torch.arange(12).view(3, 4), "ids": ["a", "b"]}
    digests = []
    for name in ("first", "second"):
        path = tmp_path / name / "train.pt"
        torch_save(content, path)
        digests.append(hashlib.sha256(path.read_bytes()).hexdigest())
        assert torch.equal(torch_load(path)["values"], content["values"])
    assert digests[0] == digests[1]


def test_an_unreadable_torch_file_is_named_with_its_cause(tmp_path):
    import pickle

    import torch

    from comma.errors import InputError

    good = tmp_path / "model.pt"
    torch_save({"weights": torch.ones(64, 64)}, good)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    text = tmp_path / "text.pt"
    text.write_text("not a checkpoint")
    foreign = tmp_path / "foreign.pt"
    foreign.write_bytes(pickle.dumps(pytest.raises))  # a pickled function: weights-only refuses
    for path in (truncated, text, foreign):
        with pytest.raises(InputError, match="not a torch file a weights-only load can read") as e:
            torch_load(path)
        assert str(e.value).startswith(f"{path}: ")
        assert "re-run the job that writes it" in str(e.value)
    with pytest.raises(InputError, match="file not found"):
        torch_load(tmp_path / "missing.pt")


DEV_FULL = "/dev/full"  # every write to it fails with ENOSPC, as on a full disk


@pytest.mark.skipif(not os.path.exists(DEV_FULL), reason="needs /dev/full")
def test_a_full_disk_names_the_file_being_written(tmp_path, monkeypatch):
    """A write() on a full disk raises "[Errno 28] No space left on device" naming no file,
    and torch's writer adds only byte positions ("unexpected pos 704 vs 598"): the error
    names the artifact, and neither it nor its temporary is left."""
    import torch

    import comma.io

    def full_disk_open(file, mode="r", *args, **kwargs):
        return open(DEV_FULL if "w" in mode else file, mode, *args, **kwargs)

    monkeypatch.setattr(comma.io, "open", full_disk_open, raising=False)
    target = tmp_path / "resume.pt"
    with pytest.raises(OSError, match=r"while writing .*resume\.pt") as error:
        torch_save({"model": torch.zeros(10_000)}, target)
    assert error.value.errno == errno.ENOSPC, error.value
    assert list(tmp_path.iterdir()) == []

    monkeypatch.undo()
    message = r"No space left on device, while writing .*test\.ref\.txt"
    with (
        pytest.raises(OSError, match=message),
        atomic_path(tmp_path / "test.ref.txt"),
        open(DEV_FULL, "w") as handle,
    ):
        handle.write("x" * 100_000)
    assert list(tmp_path.iterdir()) == []
