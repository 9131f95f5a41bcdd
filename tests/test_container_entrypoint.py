"""The container outside Docker: the Dockerfile's ENV, CMD, HEALTHCHECK and STOPSIGNAL run as the image runs them,
its build-time weights step, and the device list (`auto` = every visible GPU) that `docker run --gpus all` relies on.

Spreading requests over two workers on one device is tested against a real server in
tests/test_service_server.py (test_parallel_requests_are_batched_over_two_workers_and_equal_the_cli, with
``--workers 2``); ``ADAIN_DEVICE=cpu,cpu`` builds the same workers, which is checked here.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import httpx
import pytest
import torch

from adain.errors import InputError
from service.runtime.engine import Engine, devices
from service.settings import Settings, load_settings

from .service_fixtures import REPO, SIZE, free_port, pixels, wait_until_ready

DOCKERFILE = REPO / "Dockerfile"


# ---- reading the Dockerfile ---------------------------------------------------------------


@dataclass
class Image:
    """What the Dockerfile says about the final image (after FROM)."""

    args: dict[str, str]  # build args and their defaults
    env: dict[str, str]
    user: str
    workdir: str
    expose: list[str]
    volumes: list[str]
    cmd: list[str]
    healthcheck: list[str]
    health_options: dict[str, str]
    stopsignal: str
    runs: list[str]  # RUN commands (shell form), in order


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped, as docker reads them."""
    out, current = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#") or (not line and not current):
            continue  # comment lines inside a continued instruction are dropped too
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        if current.strip():
            keyword, _, rest = current.strip().partition(" ")
            out.append((keyword.upper(), rest.strip()))
        current = ""
    return out


def _substitute(value: str, known: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: known.get(m.group(1) or m.group(2), ""), value)


def _seconds(text: str) -> float:
    return float(text[:-1]) * {"s": 1, "m": 60, "h": 3600}[text[-1]]


def read_image(build_args: dict[str, str] | None = None) -> Image:
    args: dict[str, str] = {}
    env: dict[str, str] = {}
    found: dict[str, object] = {"user": "root", "workdir": "/", "expose": [], "volumes": [], "runs": []}
    after_from = False
    for keyword, rest in instructions(DOCKERFILE.read_text()):
        if keyword == "FROM":
            after_from, args = True, {}  # ARGs before FROM are not seen by the stage
        elif not after_from:
            continue
        elif keyword == "ARG":
            name, _, default = rest.partition("=")
            args[name] = (build_args or {}).get(name, default)
        elif keyword == "ENV":
            for pair in shlex.split(rest):
                name, _, value = pair.partition("=")
                env[name] = _substitute(value, {**args, **env})
        elif keyword == "USER":
            found["user"] = rest
        elif keyword == "WORKDIR":
            found["workdir"] = rest
        elif keyword == "EXPOSE":
            found["expose"] += rest.split()
        elif keyword == "VOLUME":
            found["volumes"] += json.loads(rest)
        elif keyword == "RUN":
            found["runs"].append(rest)
        elif keyword == "CMD":
            found["cmd"] = json.loads(rest)
        elif keyword == "STOPSIGNAL":
            found["stopsignal"] = rest
        elif keyword == "HEALTHCHECK":
            m = re.fullmatch(r"((?:--[\w-]+=\S+\s+)*)CMD\s+(\[.*\])", rest)
            assert m, f"HEALTHCHECK must be in exec form: {rest}"
            found["health_options"] = dict(o[2:].split("=", 1) for o in m.group(1).split())
            found["healthcheck"] = json.loads(m.group(2))
    return Image(args=args, env=env, **found)  # type: ignore[arg-type]


def container_env(image: Image, tmp_path: Path, **overrides: str) -> dict[str, str]:
    """Exactly the image's environment (PATH: this virtualenv's bin first, as the image's python is), plus
    ``overrides``, each of which must replace a variable the image sets or be an ADAIN_* setting."""
    for name in overrides:
        assert name in image.env or name.startswith("ADAIN_"), name
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return {"PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin", "HOME": str(home),
            **image.env, **overrides}


def healthcheck(image: Image, env: dict[str, str]) -> int:
    """Run the HEALTHCHECK command as docker does (its --timeout); its exit status (124: timed out)."""
    try:
        return subprocess.run(image.healthcheck, env=env, capture_output=True,
                              timeout=_seconds(image.health_options.get("timeout", "30s"))).returncode
    except subprocess.TimeoutExpired:
        return 124


# ---- the image as a whole -------------------------------------------------------------------


def test_dockerfile_runs_as_a_non_root_user_serves_on_all_interfaces_and_keeps_state_in_volumes() -> None:
    image = read_image()
    assert image.user not in ("", "root", "0") and not image.user.startswith("0:")
    assert image.env["ADAIN_HOST"] == "0.0.0.0"  # reachable through -p 8000:8000
    assert image.expose == [image.env["ADAIN_PORT"]]
    assert image.env.get("ADAIN_DEVICE", "auto") == "auto"  # every visible GPU under --gpus all, else the CPU
    assert image.env["ADAIN_HOME"] in image.volumes  # the weights cache
    assert str(Path(image.env["ADAIN_DB"]).parent) in image.volumes  # the style store
    assert image.cmd[-1] == "serve" and image.stopsignal == "SIGTERM"
    assert "/healthz" in " ".join(image.healthcheck)
    assert image.args["FETCH_WEIGHTS"] == "1" and "MODEL" in image.args
    assert read_image({"MODEL": "vgg19-original"}).env["ADAIN_MODEL"] == "vgg19-original"  # build arg -> runtime
    assert image.env["ADAIN_MODEL"] == ""  # empty = unset: the default bundle, or just --encoder/--decoder
    ignored = {line.strip().rstrip("/") for line in (REPO / ".dockerignore").read_text().splitlines()}
    for kept_out in ("tests", "runs", ".venv", ".venv-ci", ".git", "data", "**/__pycache__", ".pytest_cache",
                     ".ruff_cache"):
        assert kept_out in ignored, kept_out


def test_build_step_fetches_the_bundles_downloadable_files_and_verifies_packaged_ones(
        tmp_path: Path, weight_files: dict) -> None:
    """The FETCH_WEIGHTS RUN step (`adain weights pull`), with a manifest whose encoder comes from a mirror folder
    (no network) and whose decoder is a file next to the manifest, as the package ships the default decoder."""
    step = next(r for r in read_image().runs if "FETCH_WEIGHTS" in r)
    assert "adain weights pull" in step  # the CLI, not the library's internal module paths
    encoder = weight_files["vgg16"]["encoder_st"]
    (tmp_path / "mirror" / "tiny").mkdir(parents=True)
    shutil.copy(encoder, tmp_path / "mirror" / "tiny" / "tiny-encoder.safetensors")
    manifest = tmp_path / "manifest" / "models.toml"
    manifest.parent.mkdir()
    shutil.copy(weight_files["vgg16"]["decoder_st"], manifest.parent / "tiny-decoder.safetensors")
    manifest.write_text('[models.tiny]\narch = "vgg16"\ndescription = "test"\n\n[models.tiny.encoder]\n'
                        'source = "url"\nfilename = "encoder.safetensors"\n'
                        'url = "https://example.invalid/tiny-encoder.safetensors"\n\n'
                        '[models.tiny.decoder]\nsource = "package"\nfilename = "tiny-decoder.safetensors"\n')
    for fetch in ("0", "1"):
        image = read_image({"FETCH_WEIGHTS": fetch, "MODEL": "tiny"})
        home = tmp_path / f"cache{fetch}"
        (home / "pypi").mkdir(parents=True)  # where pip leaves wheels: not kept in the image
        env = container_env(image, tmp_path, ADAIN_HOME=str(home), ADAIN_MANIFEST=str(manifest),
                            ADAIN_MIRROR=str(tmp_path / "mirror"))
        done = subprocess.run(["/bin/sh", "-c", step], env={**env, **image.args}, capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
        fetched = home / "tiny" / "encoder.safetensors"
        if fetch == "0":
            assert not fetched.exists() and (home / "pypi").is_dir()
            continue
        assert fetched.read_bytes() == encoder.read_bytes() and not (home / "pypi").exists()
        lines = done.stdout.splitlines()
        assert len(lines) == 2 and lines[0].startswith("tiny encoder") and "(verified)" in lines[0], done.stdout
        assert lines[1].startswith("tiny decoder") and str(manifest.parent) in lines[1], done.stdout
        assert not (home / "tiny" / "tiny-decoder.safetensors").exists()  # a packaged file is not copied


def test_cmd_with_the_image_environment_serves_passes_its_healthcheck_and_exits_0_on_stopsignal(
        tmp_path: Path, weight_files: dict, content_paths: list[Path], style_paths: list[Path]) -> None:
    image = read_image()
    weights, port = weight_files["vgg16"], free_port()
    db = tmp_path / "lib" / "styles.db"
    env = container_env(image, tmp_path, ADAIN_HOME=str(tmp_path / "cache"), ADAIN_DB=str(db),
                        ADAIN_PORT=str(port), ADAIN_ENCODER=str(weights["encoder_st"]),
                        ADAIN_DECODER=str(weights["decoder_st"]))
    executable = shutil.which(image.cmd[0], path=env["PATH"])
    assert executable, f"{image.cmd[0]} is not on the image's PATH"
    assert healthcheck(image, env) != 0  # nothing listens yet: the check does check
    workdir = tmp_path / "app"
    workdir.mkdir()
    log = tmp_path / "server.log"
    with open(log, "wb") as out:
        process = subprocess.Popen([executable, *image.cmd[1:]], cwd=workdir, env=env, stdout=out,
                                   stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        def alive() -> None:
            assert process.poll() is None, f"exited with {process.returncode}:\n{log.read_text()}"

        if not wait_until_ready(f"{url}/readyz", 180, alive):
            raise AssertionError(f"not ready after 180 s:\n{log.read_text()}")
        ready = httpx.get(f"{url}/readyz", timeout=2)
        expected = [f"{d}#0" for d in devices("auto")]  # this machine's GPUs, else the CPU
        assert ready.json()["workers"] == expected
        assert healthcheck(image, env) == 0
        r = httpx.post(f"{url}/v1/stylize", timeout=120, data={"content_size": str(SIZE), "style_size": str(SIZE)},
                       files={"content": ("c.jpg", content_paths[0].read_bytes(), "image/jpeg"),
                              "style": ("s.jpg", style_paths[0].read_bytes(), "image/jpeg")})
        assert r.status_code == 200 and r.headers["content-type"] == "image/png", r.text
        assert min(pixels(r.content).shape[:2]) == SIZE
        assert db.is_file()  # the style store lives where ADAIN_DB says (a volume in the image)
        process.send_signal(signal.Signals[image.stopsignal])
        assert process.wait(timeout=Settings().shutdown_timeout + 30) == 0, log.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert healthcheck(image, env) != 0
    assert "Traceback" not in log.read_text()


# ---- devices -----------------------------------------------------------------------------------


def _gpus(monkeypatch: pytest.MonkeyPatch, count: int) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)


def test_device_specs(monkeypatch: pytest.MonkeyPatch) -> None:
    cuda = [torch.device("cuda", i) for i in range(4)]
    _gpus(monkeypatch, 3)  # as torch reports them: only those CUDA_VISIBLE_DEVICES leaves, renumbered from 0
    assert devices("auto") == cuda[:3]
    assert devices("cuda:0,cuda:2") == [cuda[0], cuda[2]]
    assert devices(" cuda:1 , cuda:1 ") == [cuda[1], cuda[1]]  # two workers on one GPU
    assert devices("cpu,cuda:0") == [torch.device("cpu"), cuda[0]]
    for bad in ("cuda:3", "", " , ", "tpu", "gpu:0", "cuda:x"):
        with pytest.raises(InputError):
            devices(bad)
    _gpus(monkeypatch, 1)
    assert devices("auto") == cuda[:1]
    _gpus(monkeypatch, 0)
    assert devices("auto") == [torch.device("cpu")]
    assert devices("cpu,cpu") == [torch.device("cpu")] * 2
    for bad in ("cuda", "cuda:0", "cpu,cuda:0"):
        with pytest.raises(InputError):
            devices(bad)


@pytest.mark.parametrize("visible", ["", "0"])
def test_auto_respects_cuda_visible_devices(visible: str) -> None:
    """With the real torch: hidden GPUs are not used (on a machine without GPUs `auto` is the CPU either way)."""
    code = "from service.runtime.engine import devices; print(','.join(map(str, devices('auto'))))"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "CUDA_VISIBLE_DEVICES": visible})
    assert done.returncode == 0, done.stderr
    if visible == "" or not torch.cuda.is_available():
        assert done.stdout.strip() == "cpu"
    else:
        assert done.stdout.strip() == "cuda:0"


def test_a_device_list_builds_one_worker_per_entry_like_workers_per_device(weight_files: dict) -> None:
    weights = weight_files["vgg16"]
    listed = load_settings([], {"ADAIN_DEVICE": "cpu,cpu", "ADAIN_ENCODER": str(weights["encoder_st"]),
                                "ADAIN_DECODER": str(weights["decoder_st"])})
    by_list = Engine.load(listed)
    by_count = Engine.load(replace(listed, device="cpu", workers=2))
    assert [w.name for w in by_list.workers] == [w.name for w in by_count.workers] == ["cpu#0", "cpu#1"]
    assert by_list.workers[0].stylizer is not by_list.workers[1].stylizer  # each has its own model
    assert by_list.fingerprint == by_count.fingerprint


# ---- docs/deploy.md ------------------------------------------------------------------------------


def test_deploy_docs_list_every_setting_variable_and_metric() -> None:
    from service.settings import OPTIONS

    docs = (REPO / "docs" / "deploy.md").read_text()
    for opt in OPTIONS:
        assert f"| `{opt.env}` | `{opt.flag}` |" in docs, opt.env
    for name in ("ADAIN_HOME", "ADAIN_MANIFEST", "ADAIN_MIRROR"):
        assert f"| `{name}` |" in docs, name
    source = "".join((REPO / "service" / name).read_text() for name in ("metrics.py", "runtime/collector.py"))
    found = re.findall(r"\b(Counter|Histogram|Gauge|CounterMetricFamily|GaugeMetricFamily)\(\s*\"(adain_\w+)\"",
                       source)
    assert len(found) >= 10
    for kind, name in found:
        exposed = name + "_total" if kind.startswith("Counter") else name
        assert f"`{exposed}`" in docs, exposed
    max_upload = Settings().max_upload_bytes
    assert f"client_max_body_size {max_upload};" in docs  # the nginx example matches the upload limit
    assert f"proxy_read_timeout {int(Settings().request_timeout) + 15}s;" in docs
