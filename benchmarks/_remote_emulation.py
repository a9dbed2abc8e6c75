"""A Zarr store that reads like object storage: a local store plus, per request,
a first-byte latency and a per-connection bandwidth.

Used by ``bench_ooc.py --remote-mb-per-s`` to measure EM where reading is
I/O-bound, as it is on S3/GCS/HTTP (tens to a few hundred MB/s per
connection), which the local disk of a benchmark machine is not. Every GET
still reads the real bytes from the local store; it then waits
``latency + bytes / bandwidth`` on Zarr's event loop (``asyncio.sleep``), so the
wait holds no CPU and no GIL, like a socket read. Requests in flight at the
same time each get the full bandwidth (one connection each).

A module of its own so the worker processes can unpickle the store
(``bench_ooc.py`` puts this directory on their ``PYTHONPATH``).
"""

from __future__ import annotations

import asyncio
from typing import Any

from zarr.storage import WrapperStore


class RemoteLikeStore(WrapperStore):
    """``store`` with ``latency_s`` + ``nbytes / bytes_per_s`` added to every read."""

    def __init__(self, store: Any, latency_s: float = 0.02, bytes_per_s: float = 100e6) -> None:
        super().__init__(store)
        self.latency_s = float(latency_s)
        self.bytes_per_s = float(bytes_per_s)

    def _with_store(self, store: Any) -> RemoteLikeStore:
        return type(self)(store, self.latency_s, self.bytes_per_s)

    async def _wait(self, nbytes: int) -> None:
        await asyncio.sleep(self.latency_s + nbytes / self.bytes_per_s)

    async def get(self, key: str, prototype: Any, byte_range: Any = None) -> Any:
        buf = await self._store.get(key, prototype, byte_range)
        await self._wait(0 if buf is None else len(buf))
        return buf

    async def get_partial_values(self, prototype: Any, key_ranges: Any) -> list[Any]:
        bufs = await self._store.get_partial_values(prototype, key_ranges)
        # One request per range, issued together: the slowest one sets the pace.
        await self._wait(max((len(b) for b in bufs if b is not None), default=0))
        return bufs

    def __repr__(self) -> str:
        return (f"RemoteLikeStore({self._store!r}, latency {self.latency_s * 1e3:.0f} ms, "
                f"{self.bytes_per_s / 1e6:.0f} MB/s per request)")
