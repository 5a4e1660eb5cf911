"""Real servers for tests and benchmarks, on 127.0.0.1: S3 (moto in server mode), HTTP."""

from __future__ import annotations

import contextlib
import functools
import http.server
import os
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator

#: The environment a client of the server needs (s3fs and boto3 read it themselves).
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def moto_server(env: dict[str, str] | None = None) -> Iterator[str]:
    """Start `moto_server` on a free port; yields its endpoint URL once it listens (the
    line it prints then is the event waited for), and stops it after."""
    port = free_port()
    command = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    proc = subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )
    try:
        for line in proc.stderr:
            if "Running on" in line:
                break
        else:
            raise RuntimeError("moto_server ended before listening")
        # it logs every request on stderr: drain it, or the pipe fills and the server stops
        threading.Thread(target=proc.stderr.read, daemon=True).start()
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.kill()
        proc.wait()
        proc.stderr.close()


class _Ranges(http.server.SimpleHTTPRequestHandler):
    """Files with byte ranges (what fsspec's HTTP reads ask for; the standard handler
    ignores the Range header)."""

    def do_HEAD(self) -> None:
        self._send(body=False)

    def do_GET(self) -> None:
        self._send(body=True)

    def _send(self, body: bool) -> None:
        path = self.translate_path(self.path)
        if not os.path.isfile(path):
            self.send_error(404)
            return
        with open(path, "rb") as f:
            data = f.read()
        wanted = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        start, end = (int(wanted[1]), int(wanted[2] or len(data) - 1) + 1) if wanted else (0, None)
        part = data[start:end]
        self.send_response(206 if wanted else 200)
        if wanted:
            self.send_header("Content-Range", f"bytes {start}-{start + len(part) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(part)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        if body:
            self.wfile.write(part)

    def log_message(self, *args) -> None:
        pass


@contextlib.contextmanager
def http_server(folder: str) -> Iterator[str]:
    """Serve `folder` over HTTP on 127.0.0.1 (with ranges); yields its base URL."""
    handler = functools.partial(_Ranges, directory=folder)
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}"
        finally:
            server.shutdown()
            thread.join()
