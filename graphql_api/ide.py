"""The GraphiQL IDE served by the API itself: its page, and its assets from the project's install.

No asset comes from a CDN: a machine without internet (or a browser that may not reach one)
still gets a working IDE. The assets are the npm registry's published tarballs of GraphiQL, its
explorer plugin and React, pinned below by version and by the registry's own sha512 integrity;
`python -m graphql_api.ide` (run by `make install`, `make dev`, `make test` and the Docker build)
downloads each tarball once, refuses it unless its sha512 matches the pin, and extracts only the
listed files (and each package's licence) into `graphql_api/ide_assets/`. Node is not needed,
neither to install nor to run.

This module uses the standard library alone, so the Docker build stage can run it before the
project's dependencies are installed; the API imports only `ASSETS`, `assets_dir`, `page_html`.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import os
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

# npm's own setting names the registry (a mirror, say); otherwise its public default.
DEFAULT_REGISTRY = "https://registry.npmjs.org/"
ASSETS_DIR = Path(__file__).resolve().parent / "ide_assets"
STAMP = "installed.json"


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    # The registry's `dist.integrity` of the tarball (`npm view NAME@VERSION dist.integrity`).
    integrity: str
    # Served file name -> path inside the tarball. Served names carry the version, so a browser
    # may cache them for good.
    files: tuple[tuple[str, str], ...]
    # Kept beside the assets: the licence text, or the manifest that declares it when the
    # tarball has no licence file.
    licence: str = "package/LICENSE"

    @property
    def tarball_path(self) -> str:
        base = self.name.rsplit("/", 1)[-1]
        return f"{self.name}/-/{base}-{self.version}.tgz"


PACKAGES: tuple[Package, ...] = (
    Package(
        "react",
        "18.2.0",
        "sha512-/3IjMdb2L9QbBdWiW5e3P2/npwMBaU9mHCSCUzNln0ZCYbcfTsGbTJrU/kGemdH2IWmB2ioZ+zkxtmq6g09fGQ==",
        (("react-18.2.0.min.js", "package/umd/react.production.min.js"),),
    ),
    Package(
        "react-dom",
        "18.2.0",
        "sha512-6IMTriUmvsjHUjNtEDudZfuDQUoWXVxKHhlEGSk81n4YFS+r/Kl99wXiwlVXtPBtJenozv2P+hxDsw9eA7Xo6g==",
        (("react-dom-18.2.0.min.js", "package/umd/react-dom.production.min.js"),),
    ),
    Package(
        "graphiql",
        "3.8.3",
        "sha512-cuPDYtXVKV86Pu5PHBX642Odi/uVEE2y1Jxq5rGO/Qy1G2lRp7ZZ7a/T30RzxhuLSWo9zUbzq0P3U49//H0Ugw==",
        (
            ("graphiql-3.8.3.min.js", "package/graphiql.min.js"),
            ("graphiql-3.8.3.min.css", "package/graphiql.min.css"),
        ),
    ),
    Package(
        "@graphiql/plugin-explorer",
        "1.0.2",
        "sha512-9j+kg2UjtLZD5EBmGjeWHkoVVxtbShYg2DzbUVebibnZYZM/iMBEF4vaccXJIAm5KaomIPLx0aoNs4LbODyc3Q==",
        (
            ("graphiql-plugin-explorer-1.0.2.umd.js", "package/dist/index.umd.js"),
            ("graphiql-plugin-explorer-1.0.2.css", "package/dist/style.css"),
        ),
        licence="package/package.json",
    ),
)

# Our own script (committed beside this module): the page holds no inline script, so its
# Content-Security-Policy can forbid every other origin and every inline script.
OWN_FILES = {"ide.js": Path(__file__).resolve().parent / "static" / "ide.js"}

ASSETS: dict[str, str] = {
    served: ("application/javascript" if served.endswith(".js") else "text/css")
    for pkg in PACKAGES
    for served, _ in pkg.files
} | {name: "application/javascript" for name in OWN_FILES}

ASSET_PREFIX = "/graphiql/"

# 'self' only: a request to any other origin is refused by the browser itself. Styles may be
# inline (GraphiQL's editor sets them), fonts and icons are data: URIs inside graphiql's CSS.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)


class IdeAssetsError(RuntimeError):
    """The IDE's assets could not be installed (network, integrity, archive)."""


def _manifest() -> dict[str, object]:
    return {p.name: {"version": p.version, "integrity": p.integrity} for p in PACKAGES}


def assets_dir() -> Path:
    return ASSETS_DIR


def asset_path(name: str) -> Path | None:
    """The file to serve for `name`, or None when it is not one of ours (or not installed)."""
    if name in OWN_FILES:
        return OWN_FILES[name]
    if name not in ASSETS:
        return None
    path = ASSETS_DIR / name
    return path if path.is_file() else None


def installed(dest: Path = ASSETS_DIR) -> bool:
    try:
        stamp = json.loads((dest / STAMP).read_text())
    except (OSError, ValueError):
        return False
    return bool(stamp == _manifest()) and all(
        (dest / served).is_file() for p in PACKAGES for served, _ in p.files
    )


def _registry() -> str:
    # npm itself reads the lower-case spelling.
    url = os.environ.get("NPM_CONFIG_REGISTRY") or os.environ.get("npm_config_registry")  # noqa: SIM112
    url = url or DEFAULT_REGISTRY
    return url if url.endswith("/") else url + "/"


def _check_integrity(pkg: Package, data: bytes) -> None:
    algorithm, _, expected = pkg.integrity.partition("-")
    if algorithm != "sha512":
        raise IdeAssetsError(f"{pkg.name}@{pkg.version}: pin is not a sha512 integrity")
    actual = base64.b64encode(hashlib.sha512(data).digest()).decode()
    if actual != expected:
        raise IdeAssetsError(
            f"{pkg.name}@{pkg.version}: tarball sha512 {actual} does not match the pinned "
            f"{expected}; refusing it"
        )


def _download(pkg: Package, registry: str, timeout: float) -> bytes:
    url = registry + pkg.tarball_path
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            data: bytes = resp.read()
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise IdeAssetsError(f"{pkg.name}@{pkg.version}: cannot download {url}: {reason}") from exc
    _check_integrity(pkg, data)
    return data


def _extract(pkg: Package, data: bytes) -> dict[str, bytes]:
    wanted = dict(pkg.files)
    wanted[
        f"{pkg.name.lstrip('@').replace('/', '-')}-{pkg.version}.{pkg.licence.rsplit('/', 1)[-1]}"
    ] = pkg.licence
    out: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for served, member in wanted.items():
            try:
                f = tar.extractfile(member)
            except KeyError:
                f = None
            if f is None:
                raise IdeAssetsError(f"{pkg.name}@{pkg.version}: {member} is not in the tarball")
            out[served] = f.read()
    return out


def install(dest: Path = ASSETS_DIR, *, force: bool = False, timeout: float = 60.0) -> bool:
    """Install the pinned assets into `dest`; False when they already were. All or nothing:
    files are written to a temporary folder and moved in only once every package checked out."""
    if not force and installed(dest):
        return False
    registry = _registry()
    files: dict[str, bytes] = {}
    for pkg in PACKAGES:
        files.update(_extract(pkg, _download(pkg, registry, timeout)))
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest) as tmp:
        for name, content in files.items():
            (Path(tmp) / name).write_bytes(content)
        for name in files:
            os.replace(Path(tmp) / name, dest / name)
    (dest / STAMP).write_text(json.dumps(_manifest(), indent=2) + "\n")
    return True


def page_html(graphql_path: str = "/graphql") -> str:
    """The IDE's page: every script and style from `ASSET_PREFIX` on this server."""
    styles = [s for p in PACKAGES for s, _ in p.files if s.endswith(".css")]
    scripts = [s for p in PACKAGES for s, _ in p.files if s.endswith(".js")] + list(OWN_FILES)
    links = "\n".join(f'    <link rel="stylesheet" href="{ASSET_PREFIX}{s}">' for s in styles)
    tags = "\n".join(f'    <script src="{ASSET_PREFIX}{s}" defer></script>' for s in scripts)
    return f"""<!doctype html>
<html lang="en">
  <head>
    <meta charset="utf-8">
    <title>REC-Chain GraphiQL</title>
    <link rel="icon" href="data:,">
{links}
    <style>body {{ margin: 0; }} #graphiql {{ height: 100vh; }}</style>
{tags}
  </head>
  <body>
    <div id="graphiql" data-endpoint="{graphql_path}">Loading the GraphiQL IDE ...</div>
  </body>
</html>
"""


MISSING_HTML = """<!doctype html>
<html lang="en">
  <head><meta charset="utf-8"><title>REC-Chain GraphiQL</title></head>
  <body>
    <p>The GraphiQL IDE's assets are not installed on this server. Run <code>make install</code>
    (or <code>python -m graphql_api.ide</code>) and reload. POST GraphQL queries to
    <code>/graphql</code> meanwhile.</p>
  </body>
</html>
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m graphql_api.ide",
        description="Install the GraphiQL IDE's pinned assets from the npm registry "
        "(sha512-checked), for the API to serve.",
    )
    parser.add_argument("--dest", type=Path, default=ASSETS_DIR, help="folder to install into")
    parser.add_argument("--force", action="store_true", help="download again even if installed")
    args = parser.parse_args(argv)
    try:
        changed = install(args.dest, force=args.force)
    except IdeAssetsError as exc:
        print(f"error: GraphiQL assets: {exc}", file=sys.stderr)
        return 1
    state = "installed" if changed else "already installed"
    print(f"GraphiQL assets {state} in {args.dest}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
