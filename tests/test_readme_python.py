"""The README's Python snippet, run as printed, on the default bundle: it works and computes what `adain stylize`
computes with the command line the README names next to it."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def readme_python_api() -> tuple[str, list[str]]:
    """The README's Python API snippet, and the arguments of the `adain stylize` it says it equals."""
    text = (REPO / "README.md").read_text()
    section = text.split("## Python API", 1)[1]
    snippet = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    command = re.search(r"`adain stylize ([^`]+)`", section.replace("\n", " ")).group(1)
    return snippet, shlex.split(command)


def test_the_readme_python_snippet_runs_as_printed_and_equals_the_command(tmp_path: Path, content_paths: list[Path],
                                                                           style_paths: list[Path]) -> None:
    snippet, command = readme_python_api()
    for name, source in (("photo.jpg", content_paths[3]), ("a.jpg", style_paths[5]), ("b.jpg", style_paths[6])):
        shutil.copy(source, tmp_path / name)
    run = subprocess.run([sys.executable, "-c", snippet], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    (tmp_path / "out.png").rename(tmp_path / "snippet.png")
    cli = subprocess.run([sys.executable, "-m", "adain.cli", "stylize", *command], cwd=tmp_path, capture_output=True,
                         text=True, timeout=600)
    assert cli.returncode == 0, cli.stderr
    snippet_out, cli_out = (np.asarray(Image.open(tmp_path / name)) for name in ("snippet.png", "out.png"))
    assert min(snippet_out.shape[:2]) == 512
    assert np.array_equal(snippet_out, cli_out)
