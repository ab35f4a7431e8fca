"""`magi serve-web DIR`: serve a `magi export web` folder as a static host would, plus the two headers that
make the page cross-origin isolated, so onnxruntime-web may run threads (docs/export.md):

    Cross-Origin-Opener-Policy: same-origin
    Cross-Origin-Embedder-Policy: require-corp

Any static host that sends these does the same (the folder's `_headers` file says so to Netlify and
Cloudflare Pages); without them the page runs one thread. `--no-isolation` leaves them out (to measure that).
"""

from __future__ import annotations

import functools
import http.server
import sys
from pathlib import Path
from typing import Optional

from magi.errors import ArgumentParser, number
from magi.export.web import HEADERS

TYPES = {".mjs": "text/javascript", ".js": "text/javascript", ".wasm": "application/wasm", ".onnx": "application/octet-stream",
         ".json": "application/json", ".u8": "application/octet-stream", ".f32": "application/octet-stream"}


class Handler(http.server.SimpleHTTPRequestHandler):
    isolate = True
    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map, **TYPES}

    def end_headers(self) -> None:
        if self.isolate:
            for key, value in HEADERS.items():
                self.send_header(key, value)
        self.send_header("Cache-Control", "no-cache")
        super().end_headers()

    def log_message(self, format, *args) -> None:  # quiet: one line per request is noise here
        pass


def server(directory: Path, host: str = "127.0.0.1", port: int = 8001, isolate: bool = True) -> http.server.ThreadingHTTPServer:
    handler = functools.partial(type("Isolated" if isolate else "Plain", (Handler,), {"isolate": isolate}),
                                directory=str(directory))
    return http.server.ThreadingHTTPServer((host, port), handler)


def main(argv: Optional[list[str]] = None) -> int:
    p = ArgumentParser(prog="magi serve-web", description=__doc__.split("\n\n")[0])
    p.add_argument("directory", help="a folder written by `magi export web` (e.g. site)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=number(int, low=0, high=65535), default=8001)
    p.add_argument("--no-isolation", action="store_true", help="leave COOP/COEP out: the page runs one thread")
    args = p.parse_args(argv)
    folder = Path(args.directory)
    if not (folder / "index.html").is_file() or not (folder / "manifest.json").is_file():
        print(f"magi serve-web: {folder}: no index.html and manifest.json; write it with `magi export web MODEL "
              f"--out {folder}` (or `make web`)", file=sys.stderr)
        return 2
    try:
        httpd = server(folder, args.host, args.port, not args.no_isolation)
    except OSError as e:
        print(f"magi serve-web: cannot listen on {args.host}:{args.port}: {e.strerror or e}", file=sys.stderr)
        return 2
    host, port = httpd.server_address[:2]
    print(f"magi serve-web: {folder} at http://{host}:{port}/ "
          f"({'cross-origin isolated: threads' if not args.no_isolation else 'not isolated: one thread'}; Ctrl+C stops)",
          flush=True)
    with httpd:
        httpd.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
