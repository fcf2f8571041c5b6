"""Every `snakemake` command shown in README.md, docs/ and the headers of the config files and
profiles plans without error (a dry run), so a documented command cannot break again (e.g. a
target swallowed by --configfile)."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))


def documented_commands() -> list[tuple[str, str]]:
    """(file:line, command) of every line of a ```bash block that starts with snakemake."""
    found = []
    for doc in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        in_block = False
        for number, line in enumerate(doc.read_text(encoding="utf-8").splitlines(), 1):
            if line.startswith("```"):
                in_block = line.strip() in ("```bash", "```sh", "```console")
                continue
            command = re.sub(r"^\$ ", "", line.strip())
            if in_block and command.startswith("snakemake "):
                found.append((f"{doc.name}:{number}", command))
    # The usage lines of a file's header comment: "#   snakemake all --profile ..."
    headers = [REPO / "Snakefile", *sorted(REPO.glob("config/*.yaml"))]
    for header in headers + sorted(REPO.glob("profiles/*/config.yaml")):
        for number, line in enumerate(header.read_text(encoding="utf-8").splitlines(), 1):
            command = line.lstrip("#").strip()
            if line.startswith("#") and command.startswith("snakemake "):
                found.append((f"{header.relative_to(REPO)}:{number}", command))
    return found


def test_the_docs_show_commands():
    commands = documented_commands()
    assert len(commands) >= 10
    assert any(where.startswith("config/paper.yaml:") for where, _ in commands)
    assert any(where.startswith("profiles/slurm/config.yaml:") for where, _ in commands)


def test_documented_commands_give_config_files_only_files():
    """--configfile takes every word after it: each must be a file, not a target such as
    `all` (the run would stop with FileNotFoundError: 'all')."""
    for where, command in documented_commands():
        words = shlex.split(command, comments=True)
        for k, word in enumerate(words):
            if word not in ("--configfile", "--configfiles"):
                continue
            for value in words[k + 1 :]:
                if value.startswith("-"):
                    break
                assert (REPO / value).is_file(), f"{where}: {command}: {value!r} is no file"


@pytest.mark.slow
@pytest.mark.parametrize(("where", "command"), documented_commands())
def test_documented_command_plans(where, command, tmp_path):
    words = shlex.split(command, comments=True)
    if "--report" in words:
        pytest.skip("--report renders a finished run; the end-to-end test builds one")
    args = [w for w in words[1:] if w != "-n"]
    # Our options go first: a documented command may end in --config, which takes the rest.
    cmd = [SNAKEMAKE, "--snakefile", str(REPO / "Snakefile"), "--directory", str(tmp_path)]
    cmd += ["-n", "--quiet", "rules", *args]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert result.returncode == 0, f"{where}: {command}\n{result.stderr[-3000:]}"


def documented_python() -> list[tuple[str, str]]:
    """(file:line, code) of every ```python block of README.md: the library examples a user
    copies. (docs/ shows templates, such as a rule script's call with `snakemake.resources`,
    and a full mini corpus generation, which the data tests cover.)"""
    found, block, start = [], None, 0
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    for number, line in enumerate(readme.splitlines(), 1):
        if block is None and line.strip() == "```python":
            block, start = [], number
        elif block is not None and line.startswith("```"):
            found.append((f"README.md:{start}", "\n".join(block)))
            block = None
        elif block is not None:
            block.append(line)
    return found


def test_the_readme_shows_the_library_for_r_and_d():
    code = "\n".join(text for _, text in documented_python())
    assert "attention_density_ratio" in code and "corpus_dependency" in code


@pytest.mark.slow
@pytest.mark.parametrize(("where", "code"), documented_python())
def test_documented_python_runs(where, code, tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, f"{where}:\n{code}\n{result.stderr[-3000:]}"
    assert result.stdout.strip(), f"{where}: the example prints nothing"
