"""`ctslice bench codecs`: every candidate measured on a cache's slices, and the choice among those no larger."""

from __future__ import annotations

from pathlib import Path

import numcodecs
import pytest
from conftest import TINY_SETTINGS

from ctslice.bench.codecs import STORED, Candidate, decide, measure_codecs
from ctslice.preprocess.run import run_preprocess


@pytest.fixture(scope="module")
def cache(_tiny_dataset_master, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("codecs") / "cache"
    assert run_preprocess(_tiny_dataset_master, path, TINY_SETTINGS).ok
    return path


def test_each_candidate_gets_ratio_and_cost_per_slice_and_blosc_is_left_as_found(cache):
    saved = numcodecs.blosc.use_threads
    uncompressed = Candidate("lz4", 0, numcodecs.Blosc.NOSHUFFLE)
    rows = measure_codecs(cache, slices=4, repeat=1,
                          candidates=[uncompressed, STORED, Candidate("lz4", 5, numcodecs.Blosc.SHUFFLE, threads=2)])
    assert [r["codec"] for r in rows] == ["lz4 clevel 0 noshuffle", "lz4 clevel 5 shuffle",
                                          "lz4 clevel 5 shuffle 2 threads"]
    assert [r["stored"] for r in rows] == [False, True, False]
    assert rows[0]["image_ratio"] < 1 < rows[1]["image_ratio"]  # Blosc's header on raw bytes; lz4 compresses
    assert all(r[f"{k}_us"] == r[f"{k}_decode_us"] + r[f"{k}_crc_us"] for r in rows for k in ("image", "label"))
    assert numcodecs.blosc.use_threads is saved


def _row(codec: str, ratio: float, us: float, stored: bool = False) -> dict:
    return {"codec": codec, "stored": stored, "image_ratio": ratio, "image_us": us}


def test_the_choice_is_the_fastest_codec_no_larger_than_the_stored_one():
    stored = _row("stored", 2.0, 80, stored=True)
    assert decide([_row("raw", 1.0, 40), stored, _row("zstd", 3.0, 400)]) is stored  # raw: faster but larger
    assert decide([stored, _row("same size, faster", 1.99, 60)])["codec"] == "same size, faster"
    assert decide([stored, _row("smaller, as fast", 2.2, 78)]) is stored  # within the noise: no change
    assert decide([_row("raw", 1.0, 40)]) is None  # nothing to compare with


def test_the_command_prints_a_table_per_cache_and_the_choice(cache):
    from typer.testing import CliRunner

    from ctslice.cli import app

    result = CliRunner().invoke(app, ["bench", "codecs", str(cache), str(cache), "--slices", "2"])
    assert result.exit_code == 0, result.output
    assert result.output.count("lz4 clevel 5 shuffle (stored)") == 2
    assert result.output.count("fastest per image at no larger size:") == 2
