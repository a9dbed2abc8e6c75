"""An S3 endpoint for tests: moto's server as a subprocess on 127.0.0.1.

``moto_server()`` starts ``python -m moto.server`` on a free port, waits until
it answers HTTP, and stops it (terminate, then kill) however the block ends.
``new_bucket(server)`` creates a bucket with a fresh name: moto keeps its state
for the whole session and s3fs caches listings, so every test writes to its
own bucket.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

__all__ = ["moto_server", "new_bucket", "s3_filesystem"]

# moto accepts any credentials; these make botocore skip its credential search
# (no reads of ~/.aws, no instance-metadata requests).
CREDENTIALS = {"key": "testing", "secret": "testing"}
STARTUP_SECONDS = 60.0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1.0):
            return True
    except urllib.error.HTTPError:
        return True  # an HTTP error status is still an answer
    except OSError:
        return False


@contextlib.contextmanager
def moto_server() -> Iterator[dict[str, Any]]:
    """A running moto S3 server: ``{"endpoint_url", "storage_options"}`` for s3fs."""
    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": CREDENTIALS["key"],
        "AWS_SECRET_ACCESS_KEY": CREDENTIALS["secret"],
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    # The server logs a line per request: to a file, never to a pipe nobody reads
    # (a full pipe buffer blocks the server mid-request, and every client times out).
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while not _answers(endpoint):
            if proc.poll() is not None:
                log.seek(0)
                raise RuntimeError(
                    f"moto server exited with {proc.returncode}: {log.read().decode()[-2000:]}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(f"moto server did not answer on {endpoint} in {STARTUP_SECONDS} s")
            time.sleep(0.1)
        yield {
            "endpoint_url": endpoint,
            "storage_options": {
                **CREDENTIALS,
                "client_kwargs": {"endpoint_url": endpoint},
            },
        }
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def s3_filesystem(server: dict[str, Any]) -> Any:
    """An s3fs filesystem on ``server`` (a fresh instance: no cached listings)."""
    import s3fs

    return s3fs.S3FileSystem(skip_instance_cache=True, **server["storage_options"])


def new_bucket(server: dict[str, Any], prefix: str = "dgmm-test") -> str:
    """Create a bucket with a name no other test uses; returns the name."""
    name = f"{prefix}-{uuid.uuid4().hex[:12]}"
    s3_filesystem(server).mkdir(name)
    return name
