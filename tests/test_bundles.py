"""Bundles from URLs (through ADAIN_MIRROR at a local HTTP server), the cache, its locking and the CLI.

The vgg19-original bundle of the shipped manifest is served from 127.0.0.1 with the
random fixture weights in the original release's layout.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from adain.bundles.cache import check, ensure, pull, recorded, resolve, resolve_encoder
from adain.bundles.manifest import get_bundle, load_manifest
from adain.cli import main
from adain.errors import InputError, WeightsError
from tests.test_download import FileServer

ENC, DEC = "/vgg19-original/vgg_normalised.pth", "/vgg19-original/decoder.pth"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _flip_byte(path: Path, offset: int = 4096) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def files(weight_files, tmp_path_factory) -> dict[str, bytes]:
    """Bodies by URL path: the vgg19 fixture files, and a vgg16 encoder (the wrong architecture).

    The encoder keeps the layers up to relu4_1 only, to keep the tests light (test_weights_io loads a full one).
    """
    vgg19 = weight_files["vgg19"]
    short = tmp_path_factory.mktemp("short") / "vgg_normalised.pth"
    torch.save({k: v for k, v in torch.load(vgg19["encoder_pth"]).items() if int(k.split(".")[0]) <= 30}, short)
    return {ENC: short.read_bytes(), DEC: vgg19["decoder_pth"].read_bytes(),
            "vgg16": weight_files["vgg16"]["encoder_pth"].read_bytes()}


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("ADAIN_HOME", str(home))
    monkeypatch.delenv("ADAIN_MANIFEST", raising=False)
    return home


@pytest.fixture
def mirror(home, files, monkeypatch):
    """A FileServer serving vgg19-original, with ADAIN_MIRROR pointing at it."""
    with FileServer() as server:
        server.routes = {ENC: (files[ENC], "ok"), DEC: (files[DEC], "ok")}
        monkeypatch.setenv("ADAIN_MIRROR", server.base)
        yield server


def _cli(*args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "adain.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


def test_pull_downloads_verifies_and_records(mirror, files, home, capsys):
    digests = pull("vgg19-original")
    assert digests == {"encoder": _sha(files[ENC]), "decoder": _sha(files[DEC])}
    assert (home / "vgg19-original" / "vgg_normalised.pth").read_bytes() == files[ENC]
    assert recorded(get_bundle("vgg19-original")) == {"vgg_normalised.pth": digests["encoder"],
                                                      "decoder.pth": digests["decoder"]}
    assert f"downloading {mirror.base}{ENC}" in capsys.readouterr().err
    assert pull("vgg19-original") == digests  # idempotent: verified again, nothing fetched
    assert mirror.hits == {ENC: 1, DEC: 1}


def test_resolve_pulls_on_first_use_then_checks_sha256_on_every_load(mirror, files, home):
    found = resolve("vgg19-original", quiet=True)
    assert (found.arch, found.model, found.encoder.name, found.decoder.name) == (
        "vgg19", "vgg19-original", "vgg_normalised.pth", "decoder.pth")
    assert found.sha256["decoder"] == _sha(files[DEC])
    assert resolve("vgg19-original", quiet=True).sha256 == found.sha256
    _flip_byte(found.decoder)
    with pytest.raises(WeightsError, match="adain weights pull vgg19-original") as info:
        resolve("vgg19-original", quiet=True)
    assert str(found.decoder) in str(info.value)
    assert mirror.hits == {ENC: 1, DEC: 1}  # a damaged file is reported, not silently replaced
    pull("vgg19-original", quiet=True)  # ...but pull replaces it
    assert mirror.hits == {ENC: 1, DEC: 2}
    assert resolve("vgg19-original", quiet=True).sha256 == found.sha256


def test_changed_upstream_file_fails_the_recorded_hash(mirror, files, home):
    pull("vgg19-original", quiet=True)
    decoder = home / "vgg19-original" / "decoder.pth"
    decoder.unlink()
    mirror.routes[DEC] = (files[DEC][:5000] + b"x" + files[DEC][5001:], "ok")
    with pytest.raises(WeightsError, match="sha256 mismatch"):
        pull("vgg19-original", quiet=True)
    assert not decoder.exists()
    assert check(get_bundle("vgg19-original"), "decoder") == ("missing", None)


@pytest.mark.parametrize("body, error", [
    (b"not a weight file" * 1000, "not a readable weight file"),
    ("vgg16", "missing key '25.weight' for a vgg19 encoder"),
])
def test_first_download_of_a_bad_file_keeps_nothing(mirror, files, home, body, error):
    mirror.routes[ENC] = (files.get(body, body), "ok")
    with pytest.raises(WeightsError, match=error) as info:
        pull("vgg19-original", quiet=True)
    assert "vgg_normalised.pth" in str(info.value)
    assert not (home / "vgg19-original" / "vgg_normalised.pth").exists()
    assert recorded(get_bundle("vgg19-original")) == {}


@pytest.mark.parametrize("mode", ["truncated", "error", "reset"])
def test_failed_transfer_names_the_way_out(mirror, files, home, mode):
    mirror.routes[ENC] = (files[ENC], mode)
    with pytest.raises(WeightsError) as info:
        resolve("vgg19-original", quiet=True)
    message = str(info.value)
    for needed in (f"{mirror.base}{ENC}", str(home / "vgg19-original" / "vgg_normalised.pth"), "ADAIN_MIRROR",
                   "--encoder FILE"):
        assert needed in message
    assert sorted(p.name for p in (home / "vgg19-original").iterdir()) == [".lock"]


def test_interrupted_download_leaves_nothing_taken_for_complete(mirror, files, home):
    mirror.routes[ENC] = (files[ENC], "stall")
    proc = _cli("weights", "pull", "vgg19-original")
    folder = home / "vgg19-original"
    deadline = time.monotonic() + 60
    while not any(p.stat().st_size for p in folder.glob(".*.part")) and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.kill()
    proc.communicate()
    assert [p for p in folder.glob(".*.part") if p.stat().st_size]  # killed mid-transfer
    bundle = get_bundle("vgg19-original")
    assert check(bundle, "encoder") == ("missing", None)
    mirror.routes[ENC] = (files[ENC], "ok")
    assert ensure(bundle, ["encoder"], quiet=True) == {"encoder": _sha(files[ENC])}
    assert not list(folder.glob(".*.part"))  # the next pull cleared the leftover


def test_two_processes_pulling_at_once(mirror, files, home):
    mirror.routes[ENC] = (files[ENC], "stall")  # whoever gets the lock first holds it until released
    procs = [_cli("weights", "pull", "vgg19-original") for _ in range(2)]
    errs: list[str] = []
    readers = [threading.Thread(target=lambda p=p: errs.extend(p.stderr), daemon=True) for p in procs]
    for reader in readers:
        reader.start()
    deadline = time.monotonic() + 60
    while not any("waiting for another process to finish pulling" in e for e in errs) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert mirror.hits == {ENC: 1}  # the second waits for the lock instead of downloading too
    mirror.release.set()
    outs = [p.stdout.read() for p in procs]  # stderr stays with its reader until the end
    for proc, reader in zip(procs, readers, strict=True):
        proc.wait(timeout=120)
        reader.join(timeout=10)
        proc.stdout.close()
        proc.stderr.close()
    assert [p.returncode for p in procs] == [0, 0], errs
    for out in outs:
        assert "vgg19-original encoder:" in out and "(verified)" in out
    assert mirror.hits == {ENC: 1, DEC: 1}
    assert ensure(get_bundle("vgg19-original"), ["encoder", "decoder"]) == {"encoder": _sha(files[ENC]),
                                                                             "decoder": _sha(files[DEC])}
    assert sorted(p.name for p in (home / "vgg19-original").iterdir()) == [
        ".lock", "decoder.pth", "sha256.json", "vgg_normalised.pth"]


def test_mirror_can_be_a_folder(home, files, tmp_path, monkeypatch):
    folder = tmp_path / "mirror" / "vgg19-original"
    folder.mkdir(parents=True)
    (folder / "vgg_normalised.pth").write_bytes(files[ENC])
    (folder / "decoder.pth").write_bytes(files[DEC])
    monkeypatch.setenv("ADAIN_MIRROR", str(tmp_path / "mirror"))
    assert pull("vgg19-original", quiet=True)["decoder"] == _sha(files[DEC])


def test_a_file_placed_in_the_cache_by_hand_is_checked_and_recorded(home, files, monkeypatch):
    monkeypatch.setenv("ADAIN_MIRROR", "http://127.0.0.1:9")  # would fail: nothing may be downloaded
    folder = home / "vgg19-original"
    folder.mkdir(parents=True)
    (folder / "vgg_normalised.pth").write_bytes(files[ENC])
    (folder / "decoder.pth").write_bytes(files["vgg16"])  # the wrong file
    bundle = get_bundle("vgg19-original")
    assert check(bundle, "encoder")[0] == "unverified"
    assert ensure(bundle, ["encoder"], quiet=True) == {"encoder": _sha(files[ENC])}
    assert check(bundle, "encoder")[0] == "ok"
    with pytest.raises(WeightsError, match="decoder.pth: missing key"):
        ensure(bundle, ["decoder"], quiet=True)
    assert "decoder.pth" not in recorded(bundle)


def _write_manifest(folder: Path, decoder_fields: str) -> None:
    (folder / "models.toml").write_text(f"""
[models.mine]
arch = "vgg16"
description = "a test bundle"
[models.mine.encoder]
source = "package"
filename = "enc.safetensors"
[models.mine.decoder]
source = "package"
filename = "dec.safetensors"
{decoder_fields}
""")


@pytest.fixture
def manifest_dir(home, weight_files, tmp_path, monkeypatch) -> Path:
    """ADAIN_MANIFEST: a bundle 'mine' whose files lie next to the manifest."""
    folder = tmp_path / "manifest"
    folder.mkdir()
    (folder / "enc.safetensors").write_bytes(weight_files["vgg16"]["encoder_st"].read_bytes())
    (folder / "dec.safetensors").write_bytes(weight_files["vgg16"]["decoder_st"].read_bytes())
    monkeypatch.setenv("ADAIN_MANIFEST", str(folder / "models.toml"))
    return folder


def test_manifest_sha256_and_size_are_checked_when_present(manifest_dir, weight_files):
    data = (manifest_dir / "dec.safetensors").read_bytes()
    _write_manifest(manifest_dir, "")
    found = resolve("mine", quiet=True)
    assert (found.decoder, found.arch) == (manifest_dir / "dec.safetensors", "vgg16")
    assert check(get_bundle("mine"), "decoder")[0] == "unverified"
    _write_manifest(manifest_dir, f'sha256 = "{_sha(data)}"\nsize = {len(data)}')
    assert resolve("mine", quiet=True).sha256["decoder"] == _sha(data)
    assert check(get_bundle("mine"), "decoder")[0] == "ok"
    _write_manifest(manifest_dir, f'sha256 = "{"0" * 64}"')
    with pytest.raises(WeightsError, match="does not match the manifest.*reinstall adain"):
        resolve("mine", quiet=True)
    _write_manifest(manifest_dir, f"size = {len(data) + 1}")
    with pytest.raises(WeightsError, match=f"{len(data)} bytes, the manifest says {len(data) + 1}"):
        resolve("mine", quiet=True)


def test_a_missing_shipped_file_is_a_clear_error(manifest_dir):
    _write_manifest(manifest_dir, "")
    (manifest_dir / "dec.safetensors").unlink()
    with pytest.raises(WeightsError, match="dec.safetensors is not in this installation.*--decoder FILE"):
        resolve("mine", quiet=True)
    assert main(["weights", "pull", "mine"]) == 2


@pytest.mark.parametrize("fields, error", [
    ('source = "ftp"\nfilename = "x"', "source must be one of"),
    ('source = "url"\nfilename = "x"', "a url file needs 'url'"),
    ('source = "package"\nfilename = "x"\nsha = "1"', "unknown field 'sha'"),
])
def test_manifest_mistakes_are_named(manifest_dir, fields, error):
    (manifest_dir / "models.toml").write_text(f'[models.bad]\narch = "vgg16"\n[models.bad.encoder]\n{fields}\n')
    with pytest.raises(WeightsError, match=f"models.toml: model bad encoder: {error}"):
        load_manifest()


def test_local_files_need_no_cache(home, weight_files):
    found = resolve(encoder=weight_files["vgg16"]["encoder_st"], decoder=weight_files["vgg16"]["decoder_st"])
    assert (found.arch, found.model) == ("vgg16", None)  # the arch recorded in the safetensors metadata
    found = resolve(encoder=weight_files["vgg19"]["encoder_pth"], decoder=weight_files["vgg19"]["decoder_pth"])
    assert found.arch == "vgg19"
    encoder, info = resolve_encoder(encoder=weight_files["vgg16"]["encoder_st"])
    assert encoder.arch == "vgg16" and info["sha256"] == _sha(weight_files["vgg16"]["encoder_st"].read_bytes())
    assert not home.exists()


def test_a_local_file_replaces_the_bundles_own(mirror, weight_files):
    found = resolve("vgg19-original", encoder=weight_files["vgg19"]["encoder_st"], quiet=True)
    assert found.encoder == weight_files["vgg19"]["encoder_st"]
    assert mirror.hits == {DEC: 1}  # only the decoder was needed


def test_arch_and_role_mismatches(home):
    with pytest.raises(InputError, match="--arch vgg16 does not fit model vgg19-original"):
        resolve("vgg19-original", arch="vgg16")
    with pytest.raises(WeightsError, match="model vgg19-imagenet has no decoder.*--decoder FILE"):
        resolve("vgg19-imagenet")
    with pytest.raises(WeightsError, match="unknown model 'nope'; known: .*vgg16-hed"):
        resolve("nope")


def test_vgg19_imagenet_is_converted_from_a_torchvision_file(home, tmp_path, monkeypatch):
    from torchvision.models.vgg import cfgs, make_layers

    features = make_layers(cfgs["E"][:12])  # torchvision's VGG19 feature stack up to conv4_1, randomly initialised
    state = {f"features.{k}": v for k, v in features.state_dict().items()}
    folder = tmp_path / "mirror" / "vgg19-imagenet"
    folder.mkdir(parents=True)
    torch.save(state, folder / "vgg19-dcbb9e9d.pth")
    monkeypatch.setenv("ADAIN_MIRROR", str(tmp_path / "mirror"))
    encoder, info = resolve_encoder("vgg19-imagenet", quiet=True)
    assert info["model"] == "vgg19-imagenet" and encoder.arch == "vgg19"
    assert torch.equal(encoder.layers[2].weight, state["features.0.weight"])
    assert sorted(p.name for p in (home / "vgg19-imagenet").iterdir()) == [".lock", "encoder.safetensors",
                                                                          "sha256.json"]


def test_stylize_pulls_the_model_on_first_use(mirror, content_paths, style_paths, tmp_path, capsys):
    out = tmp_path / "out.png"
    args = ["stylize", "--model", "vgg19-original", "--content", str(content_paths[0]), "--style",
            str(style_paths[0]), "-o", str(out), "--content-size", "64", "--style-size", "64"]
    assert main(args) == 0
    assert out.stat().st_size > 0
    assert f"downloading {mirror.base}{ENC}" in capsys.readouterr().err
    assert mirror.hits == {ENC: 1, DEC: 1}


def test_stylize_names_the_missing_file_when_offline(home, content_paths, style_paths, tmp_path, capsys,
                                                     monkeypatch):
    monkeypatch.setenv("ADAIN_MIRROR", "http://127.0.0.1:9")
    args = ["stylize", "--model", "vgg19-original", "--content", str(content_paths[0]), "--style",
            str(style_paths[0]), "-o", str(tmp_path / "out.png")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "adain: error: download of http://127.0.0.1:9/vgg19-original/vgg_normalised.pth failed" in err
    assert str(home / "vgg19-original" / "vgg_normalised.pth") in err


def test_weights_list_and_verify(mirror, home, capsys):
    assert main(["weights", "list"]) == 0
    listing = capsys.readouterr().out
    assert f"cache: {home}" in listing and "vgg16-hed (default) [vgg16]" in listing
    assert "not present" in listing and "none (this bundle is for training a decoder)" in listing
    assert main(["weights", "pull", "vgg19-original"]) == 0
    assert capsys.readouterr().out.count("(verified)") == 2
    assert main(["weights", "list"]) == 0
    assert "verified" in capsys.readouterr().out
    _flip_byte(home / "vgg19-original" / "decoder.pth")
    assert main(["weights", "verify", "vgg19-original"]) == 1
    out = capsys.readouterr().out
    assert "vgg19-original encoder: verified" in out and "vgg19-original decoder: FAILED" in out
    assert main(["weights", "pull", "vgg19-original"]) == 0
    assert "fetching it again" in capsys.readouterr().err
    assert main(["weights", "verify"]) == 0
    assert main(["weights", "verify", "nope"]) == 2


def test_import_downloads_nothing(tmp_path):
    home = tmp_path / "home"
    code = "import adain, adain.bundles.cache, adain.cli"
    subprocess.run([sys.executable, "-c", code], check=True, env={"ADAIN_HOME": str(home), "PATH": "/usr/bin"})
    assert not home.exists()



def test_an_unwritable_cache_is_a_clear_error(tmp_path, monkeypatch):
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("ADAIN_HOME", str(tmp_path / "a-file"))
    with pytest.raises(WeightsError, match="cannot write to the weights cache .*set ADAIN_HOME to a writable folder"):
        pull("vgg19-original")
