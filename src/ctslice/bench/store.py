"""`ctslice bench store` (also `ctslice bench loader --cache s3://...`): DataLoader pairs/s from a cache on object
storage, beside the same cache on local disk.

Rows: local disk (the complete mirror preprocess wrote, read like any local cache), the store's first epoch
through an empty mirror (cold: every subject fetched whole on first use), and a second epoch through that mirror
(warm). Without --cache it starts its own S3-compatible server (moto's server mode, a dev dependency) on
127.0.0.1 and preprocesses a demo dataset into it: a store on the same machine, as the issue asks.
"""

from __future__ import annotations

import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ..cache.location import open_cache
from ..config import LoaderConfig, PreprocessConfig, StorageConfig
from ..errors import CtsliceError

Log = Callable[[str], None]


@contextmanager
def own_store() -> Iterator[tuple[str, list[str]]]:
    """(URL, storage options) of a bucket on a moto server started here on 127.0.0.1 in its own process (in this
    one, its request handling would compete with the reader for the GIL), stopped at the end."""
    import socket
    import subprocess
    import sys

    try:
        import boto3
        import moto.server  # noqa: F401  (started below with `python -m moto.server`)
    except ImportError:
        raise CtsliceError("bench store without --cache starts moto's S3 server: pip install 'moto[server]' (the "
                           "dev extra), or give --cache s3://... of a store you have") from None
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        endpoint = f"http://127.0.0.1:{port}"
        client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="bench", aws_secret_access_key="bench",
                              region_name="us-east-1")
        for _ in range(300):  # until it answers (a few seconds)
            try:
                client.create_bucket(Bucket="ctslice-bench")
                break
            except Exception:  # noqa: BLE001  (not listening yet)
                time.sleep(0.1)
        yield "s3://ctslice-bench/cache", [f"endpoint={endpoint}", "allow_http=true", "access_key_id=bench",
                                           "secret_access_key=bench", "region=us-east-1"]
    finally:
        server.terminate()
        server.wait()


def epoch_rate(cache: Path, cfg: LoaderConfig, split: str = "train") -> tuple[float, int]:
    """(pairs/s, pairs) of one whole epoch of `split` through build_loader. With workers, their start (spawned
    for a mirror: reader.fork_safe) is inside the time; workers=0 (the default) measures what one loader worker
    does, reading in this process."""
    from ..data.loader import build_loader

    start = time.perf_counter()
    loader = build_loader(cache, split, cfg)
    pairs = sum(len(batch["label"]) for batch in loader)
    seconds = time.perf_counter() - start
    loader.dataset.reader.close()
    return pairs / seconds, pairs


def run_store_benchmark(out: Path, url: str | None, options: list[str], data: Path | None, cfg: LoaderConfig,
                        log: Log, layout: str = "shards") -> list[tuple[str, float, int]]:
    """[(row, pairs/s, pairs)]: local disk (own store only), store cold, store warm. `layout`: how the own
    store's cache is built ("shards", a new store cache's default, or "slices")."""
    if url is None:
        with own_store() as (own, own_options):
            if data is None:
                raise CtsliceError("bench store needs the demo data to preprocess into its own store")
            writer = open_cache(own, StorageConfig(local_cache=str(out / "store-writer")), own_options, writing=True)
            shutil.rmtree(writer / "subjects", ignore_errors=True)  # a rerun of the bench: a new server, new store
            from ..preprocess.run import run_preprocess

            log(f"preprocess {data} into {own} (a moto server on 127.0.0.1, {layout} layout) ...")
            report = run_preprocess(data, writer, PreprocessConfig(size=_size(data), workers=2, layout=layout))
            if not report.ok:
                raise CtsliceError(f"bench store: preprocessing failed: {report.failed}")
            return _rows(own, own_options, out, cfg, log, local=writer)
    return _rows(url, options, out, cfg, log, local=None)


def _rows(url: str, options: list[str], out: Path, cfg: LoaderConfig, log: Log, local: Path | None
          ) -> list[tuple[str, float, int]]:
    rows = []
    if local is not None:
        log("local disk: one epoch ...")
        rows.append(("local disk", *epoch_rate(local, cfg)))
    mirror_dir = out / f"store-mirror-{uuid.uuid4().hex[:8]}"
    try:
        mirror = open_cache(url, StorageConfig(local_cache=str(mirror_dir)), options)
        log("store, cold (empty mirror): one epoch ...")
        rows.append(("store, first epoch (cold mirror)", *epoch_rate(mirror, cfg)))
        log("store, warm (through the mirror): one epoch ...")
        rows.append(("store, second epoch (warm mirror)", *epoch_rate(mirror, cfg)))
    finally:
        shutil.rmtree(mirror_dir, ignore_errors=True)
    return rows


def _size(data: Path) -> int:
    import json

    return int(json.loads((data / "spec.json").read_text())["size"])


def format_rows(rows: list[tuple[str, float, int]], cfg: LoaderConfig) -> list[str]:
    lines = [f"{'DataLoader, ' + str(cfg.workers) + ' workers, batch ' + str(cfg.batch_size):44s} {'pairs/s':>10s}"
             f" {'pairs':>7s} {'/ local':>8s}"]
    base = rows[0][1] if rows and rows[0][0] == "local disk" else None
    for name, rate, pairs in rows:
        ratio = f"{rate / base:8.2f}" if base else f"{'-':>8s}"
        lines.append(f"{name:44s} {rate:10.1f} {pairs:7d} {ratio}")
    return lines
