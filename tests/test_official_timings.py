"""Reading timing files of the official code (the shared reference, or tests/bench_official.py's output)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from diffportrait3d.bench.official_timings import OfficialTimingsError, official_step_timings

SHARED_TIMINGS = Path(__file__).resolve().parents[2] / "shared" / "reference" / "timings_full_cpu.json"


def timing_file(tmp_path: Path, runs: list) -> Path:
    path = tmp_path / "official.json"
    path.write_text(json.dumps({"machine": {"cpu": "Test CPU"}, "runs": runs}))
    return path


def run(views, latent, autocast, cond, uc, peak_mib=None):
    entry = {"views": views, "latent": f"{latent}x{latent}", "autocast": autocast,
             "apply_model_cond_median_s": cond, "apply_model_uc_median_s": uc}
    if peak_mib is not None:
        entry["peak_rss_mib_so_far"] = peak_mib
    return entry


def test_a_step_is_the_cond_plus_the_uncond_median_of_the_matching_run(tmp_path):
    path = timing_file(tmp_path, [
        run(4, 16, "none", 1.0, 0.5),
        run(8, 16, "none", 6.117, 3.9811, peak_mib=11739.5),
        run(8, 16, "bf16", 4.0897, 2.3689),
        run(8, 32, "none", 20.0, 10.0),
    ])
    timings = official_step_timings(path, views=8, latent=16)
    assert timings["seconds_per_step_fp32"] == pytest.approx(6.117 + 3.9811)
    assert timings["seconds_per_step_bf16_autocast"] == pytest.approx(4.0897 + 2.3689)
    assert timings["peak_memory_bytes_fp32"] == int(11739.5 * 2**20)
    assert timings["machine"] == "Test CPU" and timings["source"] == str(path)
    assert official_step_timings(path, views=4, latent=16)["seconds_per_step_fp32"] == pytest.approx(1.5)
    assert "seconds_per_step_bf16_autocast" not in official_step_timings(path, views=8, latent=32)


def test_the_official_steps_work_is_read_when_the_harness_counted_it(tmp_path):
    counted = {**run(8, 16, "none", 6.0, 4.0), "flops_cond": 1182067425280, "flops_uc": 801027850240,
               "flops_per_step": 1983095275520}
    assert official_step_timings(timing_file(tmp_path, [counted]), 8, 16)["flops_per_step_fp32"] == 1983095275520
    assert "flops_per_step_fp32" not in official_step_timings(timing_file(tmp_path, [run(8, 16, "none", 6.0, 4.0)]), 8, 16)


@pytest.mark.parametrize("record", ["official_cpu_timings_xeon.json", "official_cpu_timings_xeon_flops.json"])
def test_the_records_in_docs_read_as_official_timings(record):
    """The harness outputs kept in docs/ stay usable with ``bench --official``."""
    timings = official_step_timings(Path(__file__).resolve().parents[1] / "docs" / record, views=8, latent=16)
    assert 8 < timings["seconds_per_step_fp32"] < 20 and "Xeon" in timings["machine"]
    if record.endswith("_flops.json"):
        assert 1.5e12 < timings["flops_per_step_fp32"] < 2.5e12  # the official step: about 2 TFLOP


def test_the_shared_reference_file_reads_like_a_harness_file():
    if not SHARED_TIMINGS.is_file():
        pytest.skip(f"SKIPPED: no shared reference timings at {SHARED_TIMINGS}")
    timings = official_step_timings(SHARED_TIMINGS, views=8, latent=16)
    data = json.loads(SHARED_TIMINGS.read_text())
    fp32 = next(r for r in data["runs"] if r["views"] == 8 and r["autocast"] == "none")
    assert timings["seconds_per_step_fp32"] == pytest.approx(
        fp32["apply_model_cond_median_s"] + fp32["apply_model_uc_median_s"]
    )
    assert 10 < timings["seconds_per_step_fp32"] < 20  # README: 8.7 s cond + 5.9 s uc
    assert "AMD EPYC" in timings["machine"]


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "not a timing file of the official code (write one with tests/bench_official.py"),
        ("{not json", "not a timing file of the official code"),
        ('{"machine": "x"}', "not a timing file of the official code"),
        (json.dumps({"runs": [run(8, 16, "bf16", 1.0, 1.0)]}), "no float32 run with 8 views at latent 16x16; rerun "
                                                              "tests/bench_official.py with --views 8 --latent 16"),
        (json.dumps({"runs": [{"views": 8, "latent": "16x16", "autocast": "none"}]}), "run without per-call medians"),
    ],
)
def test_unusable_files_are_named_with_what_to_do(tmp_path, content, message):
    path = tmp_path / "timings.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(OfficialTimingsError) as error:
        official_step_timings(path, views=8, latent=16)
    assert str(path) in str(error.value) and message in str(error.value)
