"""`python -m http.server` for tests, with one addition: paths to serve slowly.

    python tests/read/httpd.py FOLDER PORT [SLOW_FILE]

Serves FOLDER read-only on 127.0.0.1:PORT (http.server's own handler and threading server),
logging every request to stderr in http.server's format. A path listed in SLOW_FILE (one a
line, read at every request, so a test changes it while the server runs) is sent in 32 pieces
a quarter of a second apart (8 s in all), so a test can kill a reader in the middle of it.
"""

from __future__ import annotations

import functools
import shutil
import sys
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

PIECES, PAUSE = 32, 0.25


def main(folder: str, port: int, slow: str | None) -> None:
    class Handler(SimpleHTTPRequestHandler):
        def copyfile(self, source, outputfile) -> None:
            if slow is None or self.path not in _listed(Path(slow)):
                shutil.copyfileobj(source, outputfile)
                return
            data = source.read()
            step = -(-len(data) // PIECES) or 1
            for at in range(0, len(data), step):
                outputfile.write(data[at : at + step])
                outputfile.flush()
                time.sleep(PAUSE)

        def log_message(self, format, *args) -> None:
            super().log_message(format, *args)
            sys.stderr.flush()

    handler = functools.partial(Handler, directory=folder)
    with ThreadingHTTPServer(("127.0.0.1", port), handler) as server:
        server.serve_forever()


def _listed(path: Path) -> set[str]:
    try:
        return set(path.read_text().split())
    except FileNotFoundError:
        return set()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else None)
