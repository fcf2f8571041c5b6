"""Shared by the thin rule scripts: make `comma` importable and send output to the rule's log."""

from __future__ import annotations

import contextlib
import logging
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path

try:
    import comma  # noqa: F401
except ImportError:
    # Under --software-deployment-method conda the rule's environment has the dependencies but
    # not this package: import it from the workflow's own source tree.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


@contextlib.contextmanager
def rule_log(snakemake) -> Iterator[None]:
    """Redirect stderr (progress bars) and logging to the rule's log file; re-raise failures
    after writing their traceback there too, so the log explains what Snakemake reports.

    Also caps torch's intra-op threads at the rule's `threads:`, so parallel jobs do not
    oversubscribe the cores Snakemake handed out, and checks every raw corpus manifest among
    the rule's inputs against its folder before the rule's call (comma.data.manifest)."""
    import torch

    from comma.data.manifest import SUFFIX, check_manifest

    torch.set_num_threads(max(1, int(snakemake.threads)))
    log_path = Path(snakemake.log[0])
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w", encoding="utf-8", buffering=1) as log_file:
        handler = logging.StreamHandler(log_file)
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
        root = logging.getLogger()
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        try:
            with contextlib.redirect_stderr(log_file):
                for name in snakemake.input:
                    if str(name).endswith(SUFFIX):
                        check_manifest(name)
                yield
        except BaseException:
            log_file.write(traceback.format_exc())
            raise
        finally:
            root.removeHandler(handler)
