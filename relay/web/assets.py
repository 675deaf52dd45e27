"""The web viewer's static files, read into memory before the first fork (the jail has no
filesystem): our page, script and style (relay/web/static) and xterm.js with its fit addon from
node_modules (`make install` runs `npm ci`; package.json pins them)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

STATIC = Path(__file__).parent / "static"
NODE_MODULES = Path(__file__).resolve().parents[2] / "node_modules"
MAX_ASSET = 4 * 1024 * 1024  # bytes of one asset file

# name under /static/ -> (where it is read from, relative to its root; which root; content type)
FILES = {
    "app.js": ("app.js", "static", "text/javascript; charset=utf-8"),
    "app.css": ("app.css", "static", "text/css; charset=utf-8"),
    "xterm.js": ("@xterm/xterm/lib/xterm.js", "node_modules", "text/javascript; charset=utf-8"),
    "xterm.css": ("@xterm/xterm/css/xterm.css", "node_modules", "text/css; charset=utf-8"),
    "addon-fit.js": ("@xterm/addon-fit/lib/addon-fit.js", "node_modules", "text/javascript; charset=utf-8"),
}
PAGE = "index.html"


class AssetsMissing(Exception):
    pass


@dataclass(frozen=True)
class Asset:
    body: bytes
    content_type: str


@dataclass(frozen=True)
class Assets:
    page: Asset
    files: dict[str, Asset]

    @classmethod
    def load(cls, static: Path = STATIC, node_modules: Path = NODE_MODULES) -> Assets:
        roots = {"static": static, "node_modules": node_modules}
        files = {name: Asset(_read(roots[root] / rel), ctype) for name, (rel, root, ctype) in FILES.items()}
        return cls(Asset(_read(static / PAGE), "text/html; charset=utf-8"), files)


def _read(path: Path) -> bytes:
    try:
        with path.open("rb") as f:
            data = f.read(MAX_ASSET + 1)
    except OSError as e:
        hint = (
            " (run `make install`: it installs xterm.js with npm ci)" if "node_modules" in str(path) else ""
        )
        raise AssetsMissing(f"cannot read the web viewer's {path}: {e.strerror}{hint}") from None
    if len(data) > MAX_ASSET:
        raise AssetsMissing(f"{path} is over {MAX_ASSET} bytes")
    return data
