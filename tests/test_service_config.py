"""Service configuration (flags, ADAIN_* variables, the documentation of both) and style store URLs."""

from __future__ import annotations

import socket
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

from adain.errors import InputError
from adain.precision import auto_precision
from service.cli import main as serve_main
from service.runtime.engine import Engine
from service.settings import OPTIONS, Settings, load_settings
from service.store import open_store
from service.store.sql import SQLStyleStore

from .service_fixtures import REPO, free_port, wait_until_ready


def test_flags_beat_environment_beat_defaults() -> None:
    env = {"ADAIN_BATCH_SIZE": "16", "ADAIN_PORT": "9000", "ADAIN_FORMATS": "png, JPG", "ADAIN_DB": "/tmp/x.db"}
    s = load_settings(["--port", "9100", "--devices", "cuda:0,cuda:1", "--batch-window-ms", "2.5"], env)
    assert (s.port, s.batch_size, s.device, s.batch_window_ms) == (9100, 16, "cuda:0,cuda:1", 2.5)
    assert s.formats == ("png", "jpeg") and s.pil_formats == ("PNG", "JPEG") and s.db == "/tmp/x.db"
    assert load_settings([], {}) == Settings()


@pytest.mark.parametrize("argv, env, culprit", [
    ([], {"ADAIN_BATCH_SIZE": "zero"}, "ADAIN_BATCH_SIZE"),
    (["--queue-size", "0"], {}, "--queue-size"),
    (["--formats", "jpeg,svg"], {}, "--formats"),
    (["--precision", "fp8"], {}, "--precision"),
    ([], {"ADAIN_REQUEST_TIMEOUT": "-1"}, "ADAIN_REQUEST_TIMEOUT"),
    (["--grain", "0.6"], {}, "--grain"),
])
def test_bad_values_are_usage_errors(argv: list[str], env: dict[str, str], culprit: str,
                                     capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exc:
        load_settings(argv, env)
    assert exc.value.code == 2 and culprit in capsys.readouterr().err


@pytest.mark.parametrize(("argv", "grain"), [([], 0.2), (["--grain", "0"], 0.0), (["--grain", "0.05"], 0.05)])
def test_the_engine_stylizes_with_the_decoders_grain_unless_told(argv: list[str], grain: float,
                                                                 weight_files: dict) -> None:
    weights = weight_files["vgg16"]  # "decoder_grain" has a grain of 0.2 in its file
    settings = load_settings(argv, {"ADAIN_DEVICE": "cpu", "ADAIN_ENCODER": str(weights["encoder_grain"]),
                                    "ADAIN_DECODER": str(weights["decoder_grain"])})
    assert Engine.load(settings).workers[0].stylizer.grain == grain


@pytest.mark.parametrize("precision", ["auto", "fp32"])
def test_the_engine_logs_and_runs_the_precision_chosen(precision: str, weight_files: dict,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    weights = weight_files["vgg16"]
    settings = load_settings([] if precision == "auto" else ["--precision", precision],
                             {"ADAIN_DEVICE": "cpu", "ADAIN_ENCODER": str(weights["encoder_st"]),
                              "ADAIN_DECODER": str(weights["decoder_st"])})
    assert Settings().precision == "auto"
    with caplog.at_level("INFO", logger="adain.service"):
        engine = Engine.load(settings)
    chosen = auto_precision("cpu") if precision == "auto" else precision  # bf16 on CPUs with AVX-512 BF16 or AMX
    assert engine.precision == chosen and engine.workers[0].stylizer.precision == chosen
    assert f"-{chosen}-" in engine.fingerprint  # stored style statistics are kept per precision
    expected_line = f"precision {chosen}" + (" (auto)" if precision == "auto" else "")
    assert expected_line in [r.getMessage() for r in caplog.records]


def test_every_setting_has_an_option_and_is_documented() -> None:
    assert [o.name for o in OPTIONS] == [f.name for f in fields(Settings)]
    docs = (REPO / "docs" / "service.md").read_text()
    for opt in OPTIONS:
        assert f"`{opt.flag}`" in docs and f"`{opt.env}`" in docs, opt.name


def test_store_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    cases = [("sqlite:///rel/a.db", tmp_path / "rel" / "a.db"), (f"sqlite:///{tmp_path}/b.db", tmp_path / "b.db"),
             (str(tmp_path / "c" / "c.db"), tmp_path / "c" / "c.db")]
    for url, path in cases:
        store = open_store(url)
        assert isinstance(store, SQLStyleStore) and store.path.resolve() == path and path.is_file()
        store.close()
    for url in ("mysql://db/adain", "sqlite://no-slash.db"):
        with pytest.raises(InputError):
            open_store(url)


def test_serve_with_missing_weights_fails_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    missing = str(tmp_path / "missing.safetensors")
    assert serve_main(["--encoder", missing, "--decoder", missing, "--db", str(tmp_path / "styles.db")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("adain serve: error:") and "missing.safetensors" in err and err.count("\n") == 1


def test_serve_stopped_by_ctrl_c_returns_and_gives_the_callers_signal_handlers_back(
        tmp_path: Path, weight_files: dict, caplog: pytest.LogCaptureFixture) -> None:
    """``adain serve`` run in-process: it logs where it listens, Ctrl-C stops it with status 0, and Ctrl-C and
    SIGTERM then do what they did before (it once left both ignored for the rest of the calling process)."""
    import logging
    import os
    import signal
    import threading

    port, weights = free_port(), weight_files["vgg16"]
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def interrupt_when_ready() -> None:
        wait_until_ready(f"http://127.0.0.1:{port}/readyz", 120)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt_when_ready, daemon=True).start()
    with caplog.at_level(logging.INFO, logger="adain.service"):
        status = serve_main(["--encoder", str(weights["encoder_st"]), "--decoder", str(weights["decoder_st"]),
                             "--device", "cpu", "--port", str(port), "--db", str(tmp_path / "styles.db"),
                             "--log-level", "warning"])
    assert status == 0
    assert f"listening on http://127.0.0.1:{port} (the web page at /" in caplog.text
    assert {sig: signal.getsignal(sig) for sig in before} == before


def test_the_docs_say_what_the_web_page_does_with_api_keys() -> None:
    """The page has a key field and sends the key (tests/test_web_page.py drives it against a keyed server); the
    docs once said so in one place and the opposite in another."""
    page = (REPO / "service" / "static" / "index.html").read_text()
    assert 'id="api-key"' in page and "Authorization: `Bearer" in (REPO / "service/static/app.js").read_text()
    docs = " ".join((REPO / "docs" / "service.md").read_text().split())
    assert "The web page has an API key field" in docs and "sent as `Authorization: Bearer KEY`" in docs
    for denial in ("does not send keys", "does not send the key", "its calls get 401"):
        assert denial not in docs, denial


@pytest.mark.parametrize("case", ["busy port", "busy admin port", "admin port is the port"])
def test_ports_that_cannot_be_listened_on_are_bad_configuration(case: str, tmp_path: Path,
                                                                weight_files: dict) -> None:
    """Exit status 2 and one line, as for any bad configuration (a busy port gave status 3, a busy admin port a
    120-line traceback, and the same port twice was not noticed)."""
    w = weight_files["vgg16"]
    with socket.create_server(("127.0.0.1", 0)) as busy:
        taken, free = busy.getsockname()[1], free_port()
        ports = {"busy port": (taken, free), "busy admin port": (free, taken), "admin port is the port": (free, free)}
        port, admin_port = ports[case]
        result = subprocess.run([sys.executable, "-m", "adain.cli", "serve", "--encoder", str(w["encoder_st"]),
                                 "--decoder", str(w["decoder_st"]), "--device", "cpu", "--db", str(tmp_path / "s.db"),
                                 "--port", str(port), "--admin-port", str(admin_port), "--log-level", "error"],
                                cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("adain serve: error:"), result.stderr
    assert str(taken if case != "admin port is the port" else free) in lines[0]
