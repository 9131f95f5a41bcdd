"""The package imports without the service, and the CLI answers."""

import subprocess
import sys


def test_import_without_fastapi():
    code = "import sys, adain; assert 'fastapi' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_cli_help():
    out = subprocess.run([sys.executable, "-m", "adain.cli", "--help"], capture_output=True, text=True, check=True)
    assert "stylize" in out.stdout
