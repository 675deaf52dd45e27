"""The web viewer's static files, read into memory before the first fork (the jail has no
filesystem): our page, script and style (relay/web/static) and xterm.js with its fit addon from
node_modules (`make install` runs `npm ci`; package.json pins them).

Every HTTP connection is a jailed process of its own, so a page asks for little: the styles
(xterm.css and our app.css) are inside the page, and two scripts follow it, each named by its
content's hash and cached by browsers for good: our small socket.js, which opens the WebSocket
at once, and xterm.js, its fit addon and our app.js as one file. The WebSocket's connection is
then forked while the large script is still arriving.
"""

from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass
from pathlib import Path

STATIC = Path(__file__).parent / "static"
# npm ci's node_modules: beside the source tree (make install), or under the venv's prefix
# (make install-system copies it to PREFIX/share/pymate-relay)
_SOURCE_TREE = Path(__file__).resolve().parents[2] / "node_modules"
NODE_MODULES = next(
    (d for d in (_SOURCE_TREE, Path(sys.prefix) / "share" / "pymate-relay" / "node_modules") if d.is_dir()),
    _SOURCE_TREE,
)
MAX_ASSET = 4 * 1024 * 1024  # bytes of one asset file
PAGE = "index.html"
SOCKET = "socket.js"  # the first script: it opens the WebSocket while the large one loads
# (root, path under it), in the order they are joined
SCRIPTS = (
    ("node_modules", "@xterm/xterm/lib/xterm.js"),
    ("node_modules", "@xterm/addon-fit/lib/addon-fit.js"),
    ("static", "app.js"),
)
STYLES = (("node_modules", "@xterm/xterm/css/xterm.css"), ("static", "app.css"))
JS = "text/javascript; charset=utf-8"
IMMUTABLE = "public, max-age=31536000, immutable"  # a hashed name never changes content


class AssetsMissing(Exception):
    pass


@dataclass(frozen=True)
class Asset:
    body: bytes
    content_type: str
    cache: str | None = None  # a Cache-Control other than the default (no-store)


@dataclass(frozen=True)
class Assets:
    page: Asset
    files: dict[str, Asset]  # by name under /static/

    @classmethod
    def load(cls, static: Path | None = None, node_modules: Path | None = None) -> Assets:
        static = static or STATIC
        roots = {"static": static, "node_modules": node_modules or NODE_MODULES}
        script = _joined([_read(roots[r] / p, r) for r, p in SCRIPTS], b"\n;\n")
        style = _joined([_read(roots[r] / p, r) for r, p in STYLES], b"\n")
        socket_js = _read(static / SOCKET, "static")
        names = {"script": _hashed(script, "js"), "socket": _hashed(socket_js, "js")}
        page = _read(static / PAGE, "static").replace(b"{{style}}", style.replace(b"</", b"<\\/"))
        for key, name in names.items():
            page = page.replace(f"{{{{{key}}}}}".encode(), name.encode())
        files = {
            names["script"]: Asset(script, JS, IMMUTABLE),
            names["socket"]: Asset(socket_js, JS, IMMUTABLE),
        }
        return cls(Asset(page, "text/html; charset=utf-8"), files)


def _hashed(body: bytes, ext: str) -> str:
    return f"pymate-{hashlib.sha256(body).hexdigest()[:16]}.{ext}"


def _joined(parts: list[bytes], sep: bytes) -> bytes:
    """The parts as one file, without their source-map comments (the maps are not served)."""
    return sep.join(
        b"\n".join(line for line in part.split(b"\n") if not line.startswith(b"//# sourceMappingURL="))
        for part in parts
    )


def _read(path: Path, root: str) -> bytes:
    try:
        with path.open("rb") as f:
            data = f.read(MAX_ASSET + 1)
    except OSError as e:
        hint = " (run `make install`: it installs xterm.js with npm ci)" if root == "node_modules" else ""
        raise AssetsMissing(f"cannot read the web viewer's {path}: {e.strerror}{hint}") from None
    if len(data) > MAX_ASSET:
        raise AssetsMissing(f"{path} is over {MAX_ASSET} bytes")
    return data
