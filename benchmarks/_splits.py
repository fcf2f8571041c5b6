"""Evaluation data directories for the benchmarks that score NAR models on the validation
split as well as the test split, with the workflow's own evaluation
(:func:`comma.stages.nar.evaluate_nar` reads ``test.pt`` and, for token tasks,
``test.ref.txt`` from a data directory).

Each split gets a directory whose ``test.pt`` is that split; the other files of the prepared
corpus are linked. The validation split has no reference file: its references are spelled from
its target ids, as the test split's are (checked against ``test.ref.txt``)."""

from __future__ import annotations

from pathlib import Path

from comma.data.packed import load_split
from comma.data.vocab import Vocabulary
from comma.stages.scoring import ids_to_text

SPLITS = ("valid", "test")


def split_dirs(data: Path, scratch: Path, splits=SPLITS) -> dict[str, Path]:
    """split -> a directory under `scratch` that evaluate_nar reads as that split of the
    prepared corpus `data` (work/data/TASK)."""
    vocab = Vocabulary.load(data / "dict.tgt.txt") if (data / "dict.tgt.txt").exists() else None
    dirs = {}
    for split in splits:
        d = scratch / split
        d.mkdir(parents=True)
        for path in data.iterdir():
            if path.is_file() and path.name not in ("test.pt", "test.ref.txt"):
                (d / path.name).symlink_to(path.resolve())
        (d / "test.pt").symlink_to((data / f"{split}.pt").resolve())
        if vocab is not None:  # token targets (NMT, ASR): references as text
            pairs = load_split(data / f"{split}.pt")
            references = [ids_to_text(pairs.tgt[k].tolist(), vocab) for k in range(len(pairs))]
            if split == "test":
                given = (data / "test.ref.txt").read_text(encoding="utf-8").splitlines()
                if references != given:
                    raise SystemExit(
                        f"{data}: references spelled from its ids differ from test.ref.txt"
                    )
            (d / "test.ref.txt").write_text("\n".join(references) + "\n", encoding="utf-8")
        dirs[split] = d
    return dirs
