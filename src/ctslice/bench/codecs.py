"""Which Blosc codec for the slice chunks: compressed size against what a loader worker pays to read a slice.

Each candidate encodes the same cached slices; a slice's cost is what the reader does per chunk (cache/reader.py):
the crc32c over the stored bytes and the Blosc decode straight into a reused array, on one core (a DataLoader
worker's). Reading the file from the page cache is a copy of the stored bytes, so it grows with them like the crc.
`decide` names the candidate with the lowest cost among those no larger than the cache's own codec.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import google_crc32c
import numcodecs
import numcodecs.blosc
import numpy as np

from ..cache import store
from ..cache.manifest import read_manifest
from ..errors import CacheError


@dataclass(frozen=True)
class Candidate:
    cname: str
    clevel: int
    shuffle: int  # numcodecs.Blosc.NOSHUFFLE, SHUFFLE or BITSHUFFLE
    blocksize: int = 0  # 0: Blosc's own choice
    threads: int = 1  # Blosc's internal threads while decoding

    @property
    def name(self) -> str:
        parts = [self.cname, f"clevel {self.clevel}", ("noshuffle", "shuffle", "bitshuffle")[self.shuffle]]
        if self.blocksize:
            parts.append(f"block {self.blocksize // 1024}K")
        if self.threads > 1:
            parts.append(f"{self.threads} threads")
        return " ".join(parts)


STORED = Candidate("lz4", 5, numcodecs.Blosc.SHUFFLE)
"""The image codec the cache writes (store.IMAGE_CODECS)."""

CANDIDATES = [
    Candidate("lz4", 0, numcodecs.Blosc.NOSHUFFLE),  # clevel 0: stored uncompressed, decoding is a copy
    Candidate("lz4", 1, numcodecs.Blosc.NOSHUFFLE),
    Candidate("lz4", 5, numcodecs.Blosc.NOSHUFFLE),
    Candidate("lz4", 1, numcodecs.Blosc.SHUFFLE),
    STORED,
    Candidate("lz4", 9, numcodecs.Blosc.SHUFFLE),
    Candidate("lz4", 5, numcodecs.Blosc.SHUFFLE, blocksize=64 * 1024),
    Candidate("lz4", 5, numcodecs.Blosc.SHUFFLE, blocksize=256 * 1024),
    Candidate("lz4", 5, numcodecs.Blosc.SHUFFLE, threads=2),
    Candidate("lz4", 5, numcodecs.Blosc.BITSHUFFLE),
    Candidate("lz4hc", 5, numcodecs.Blosc.SHUFFLE),  # slower to write, as fast to read as lz4
    Candidate("blosclz", 5, numcodecs.Blosc.SHUFFLE),
    Candidate("zstd", 1, numcodecs.Blosc.SHUFFLE),
    Candidate("zstd", 1, numcodecs.Blosc.BITSHUFFLE),
]


def sample_slices(cache: Path, limit: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Up to `limit` (image, label) slices spread evenly over the cache's subjects and through each volume (all of
    a small cache's slices)."""
    manifest = read_manifest(cache)
    per_subject = -(-limit // max(1, len(manifest.subjects)))
    images, labels = [], []
    for record in manifest.subjects.values():
        group = store.open_subject(cache, record.path)
        step = max(1, record.slices // per_subject)
        images += list(np.asarray(group["image"][::step]))
        labels += list(np.asarray(group["label"][::step]))
        if len(images) >= limit:
            break
    return images[:limit], labels[:limit]


def _per_slice_us(fn, encoded: list[bytes], outs: list[np.ndarray], repeat: int) -> float:
    """Best of `repeat` passes over the slices, in CPU microseconds a slice (steadier than wall time on a shared
    machine; Blosc's own threads are counted too)."""
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        for e, o in zip(encoded, outs):
            fn(e, o)
        best = min(best, time.process_time() - start)
    return best / len(encoded) * 1e6


def measure_codecs(cache: Path, slices: int = 64, repeat: int = 5,
                   candidates: list[Candidate] | None = None) -> list[dict]:
    """For each candidate, on images and labels: compression ratio, decode us a slice (into a reused array, one
    core unless the candidate has threads), crc32c us a slice over the stored bytes, and their sum; "slices": how
    many were measured."""
    images, labels = sample_slices(cache, slices)
    if not images:
        raise CacheError(f"{cache}: no slices to measure codecs on")
    saved = numcodecs.blosc.use_threads
    rows = []
    try:
        for candidate in candidates or CANDIDATES:
            row = {"codec": candidate.name, "stored": candidate == STORED, "slices": len(images)}
            numcodecs.blosc.use_threads = candidate.threads > 1
            numcodecs.blosc.set_nthreads(candidate.threads)
            for kind, arrays in (("image", images), ("label", labels)):
                encoded = [bytes(numcodecs.blosc.compress(a, candidate.cname.encode(), candidate.clevel,
                                                          candidate.shuffle, candidate.blocksize)) for a in arrays]
                outs = [np.empty_like(a) for a in arrays[:1]] * len(arrays)  # one reused array, as the reader
                decode = _per_slice_us(numcodecs.blosc.decompress, encoded, outs, repeat)
                crc = _per_slice_us(lambda e, _: google_crc32c.value(e), encoded, outs, repeat)
                row[f"{kind}_ratio"] = sum(a.nbytes for a in arrays) / sum(len(e) for e in encoded)
                row[f"{kind}_decode_us"] = decode
                row[f"{kind}_crc_us"] = crc
                row[f"{kind}_us"] = decode + crc
            rows.append(row)
    finally:
        numcodecs.blosc.use_threads = saved
        numcodecs.blosc.set_nthreads(1)
    return rows


SAME = 0.05
"""Differences within 5% are treated as equal: the spread of one run on this shared VM for the same codec."""


def decide(rows: list[dict]) -> dict | None:
    """The row with the lowest image cost (decode + crc) among those whose images are no larger than the stored
    codec's, or the stored one unless that is more than `SAME` faster (and ratios within `SAME` count as equal);
    None without the stored row."""
    stored = next((r for r in rows if r["stored"]), None)
    if stored is None:
        return None
    fits = [r for r in rows if r["image_ratio"] >= (1 - SAME) * stored["image_ratio"]]
    best = min(fits, key=lambda r: r["image_us"])
    return best if best["image_us"] < (1 - SAME) * stored["image_us"] else stored


def format_codecs(title: str, rows: list[dict]) -> list[str]:
    lines = [title, f"{'codec':36s} {'image ratio':>11s} {'decode us':>9s} {'crc us':>6s} {'us/image':>8s} "
                    f"{'label ratio':>11s} {'us/label':>8s}"]
    for r in rows:
        name = r["codec"] + (" (stored)" if r["stored"] else "")
        lines.append(f"{name:36s} {r['image_ratio']:11.2f} {r['image_decode_us']:9.0f} {r['image_crc_us']:6.0f} "
                     f"{r['image_us']:8.0f} {r['label_ratio']:11.1f} {r['label_us']:8.0f}")
    best = decide(rows)
    if best is not None:
        stored = next(r for r in rows if r["stored"])
        verdict = ("the stored codec" if best is stored else
                   f"{best['codec']}, {stored['image_us'] / best['image_us']:.2f}x faster")
        lines.append(f"fastest per image at no larger size: {verdict}")
    return lines
