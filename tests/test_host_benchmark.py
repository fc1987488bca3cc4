"""The benchmark and the batched guidance it measures, inside the real ComfyUI: cond and uncond share one
UNet call with the pose ControlNet on conditional rows only, and give the numbers of separate calls."""

from __future__ import annotations

import json

import pytest
import torch
from guidance_helpers import (
    FIXTURES,
    SIZE,
    VIEWS,
    SeparateCondCalls,
    assert_equal_up_to_batch_shape_rounding,
    batched_and_apart,
    guided_step,
    official_views_setup,
)
from safetensors.torch import load_file

from diffportrait3d.bench.heap_usage import heap_bytes_in_use
from diffportrait3d.kernels.cpu.matmul import native_bf16_cpu

pytestmark = pytest.mark.host

def test_pose_controlnet_batched_on_conditional_rows_equals_separate_calls(tiny_dp3d):
    import comfy.patcher_extension as ext

    from diffportrait3d.nodes.sampler import ConditionalRowsControl

    golden = load_file(FIXTURES / "golden_apply_v8.safetensors")
    model, positive, negative, noise = official_views_setup(tiny_dp3d)
    assert isinstance(positive[0][1]["control"], ConditionalRowsControl)
    assert negative[0][1]["control"] is positive[0][1]["control"]

    batched, apart = batched_and_apart(model, lambda clone: guided_step(clone, positive, negative, noise))
    assert_equal_up_to_batch_shape_rounding(batched, apart)

    # The separate uncond call got no residuals at all: the ControlNet only ever saw conditional rows.
    no_pose = [[golden["c_crossattn_0"][:1], {}]]
    without_pose = model.clone()
    without_pose.add_wrapper_with_key(ext.WrappersMP.CALC_COND_BATCH, "test", SeparateCondCalls())
    plain = guided_step(without_pose, positive, no_pose, noise)
    assert torch.allclose(plain, apart, atol=1e-6)


def test_conditional_rows_control_gives_uncond_rows_zero_residuals(tiny_dp3d):
    from nodes import ControlNetApplyAdvanced

    from diffportrait3d.nodes.sampler import ConditionalRowsControl

    text = [[torch.randn(1, 77, 32), {}]]
    hints = torch.rand(2, 64, 64, 3, generator=torch.Generator().manual_seed(1))
    positive, _ = ControlNetApplyAdvanced().apply_controlnet(text, text, tiny_dp3d["pose"], hints, 1.0, 0.0, 1.0)
    control = positive[0][1]["control"]
    control.pre_run(tiny_dp3d["unet"].model, lambda a: tiny_dp3d["unet"].model.model_sampling.percent_to_sigma(a))
    x = torch.randn(4, 4, 8, 8)
    sigma = torch.full((4,), 5.0)
    cond = {"c_crossattn": torch.randn(1, 77, 32).expand(4, -1, -1)}
    options = {"cond_or_uncond": [1, 0]}
    mixed = ConditionalRowsControl(control).get_control(x, sigma, cond, 2, options)
    alone = control.get_control(x[2:], sigma[2:], {"c_crossattn": cond["c_crossattn"][2:]}, 1, {"cond_or_uncond": [0]})
    for kind in ("input", "middle"):
        for got, expected in zip(mixed[kind], alone[kind], strict=True):
            assert got.shape[0] == 4
            assert torch.count_nonzero(got[:2]) == 0
            assert torch.allclose(got[2:], expected, atol=1e-6)
    assert ConditionalRowsControl(control).get_control(x[:2], sigma[:2], cond, 1, {"cond_or_uncond": [1]}) is None


def test_bench_reports_time_breakdown_overhead_and_memory(comfy_host, capsys):
    from diffportrait3d.cli.main import main

    assert main(["bench", "--model", "tiny", "--views", "8", "--latent", "8", "--steps", "2", "--warmup", "0",
                 "--alone-repeats", "1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["model"] == "tiny" and result["views"] == 8 and result["latent"] == [8, 8]
    assert len(result["step_seconds"]) == 2 and result["seconds_per_step"] > 0
    assert set(result["breakdown"]) == {
        "appearance_net", "pose_controlnet", "unet_with_cross_view", "cross_view_modules_in_unet", "sampler_overhead"
    }
    assert all(result["breakdown"][part] > 0 for part in ("appearance_net", "pose_controlnet", "unet_with_cross_view"))
    assert result["breakdown"]["cross_view_modules_in_unet"] < result["breakdown"]["unet_with_cross_view"]
    assert result["unet_calls_per_step"] == 1  # cond and uncond batched
    assert result["family"] == "dp3d" and result["appearance_runs_per_step"] == 1  # one reference, shared by views
    assert set(result["parts_alone"]) == {"appearance_net", "pose_controlnet", "unet"}
    assert result["sum_of_parts_alone"] == pytest.approx(sum(result["parts_alone"].values()))
    assert result["peak_memory_bytes"] >= result["rss_after_build_bytes"] > 0
    assert 0 < result["weight_bytes"] < 100 * 2**20
    assert set(result["huge_pages"]) == {"kernel_mode", "THP_MEM_ALLOC_ENABLE"}


def test_bench_dp360_places_its_modules_and_runs_two_references(comfy_host, capsys):
    """DiffPortrait360: 20 cross-view modules placed by its rule (none in the middle block), the appearance net
    run once per reference (front and back) in a step, 16 views as two windows of 8."""
    from diffportrait3d.bench.benchmark import build_random_models
    from diffportrait3d.cli.main import main
    from diffportrait3d.kernels.model.cross_view_attention import CrossViewModule

    module_set = build_random_models(family="dp360").cross_view.model
    assert sum(isinstance(m, CrossViewModule) for m in module_set.modules()) == 20
    assert "middle" not in {place.location for place in module_set.placements()}
    assert main(["bench", "--family", "dp360", "--views", "16", "--latent", "8", "--steps", "1", "--warmup", "0",
                 "--alone-repeats", "1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["family"] == "dp360" and result["references"] == 2 and result["views"] == 16
    assert result["appearance_runs_per_step"] == 2  # front and back, each shared by all views
    assert result["breakdown"]["appearance_net"] > 0 and result["seconds_per_view_per_step"] > 0


def test_bench_compares_with_official_timings_measured_on_this_machine(comfy_host, capsys, tmp_path):
    from diffportrait3d.bench.benchmark import format_report
    from diffportrait3d.cli.main import main

    official = tmp_path / "official_here.json"
    official.write_text(json.dumps({"machine": {"cpu": "Test Xeon"}, "runs": [
        {"views": 2, "latent": "8x8", "autocast": "none", "apply_model_cond_median_s": 0.3,
         "apply_model_uc_median_s": 0.2, "peak_rss_mib_so_far": 512.0},
    ]}))
    assert main(["bench", "--model", "tiny", "--views", "2", "--latent", "8", "--steps", "1", "--warmup", "0",
                 "--alone-repeats", "1", "--official", str(official), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["official_cpu"]["seconds_per_step_fp32"] == pytest.approx(0.5)
    assert result["official_cpu"]["peak_memory_bytes_fp32"] == 512 * 2**20
    ratio = result["seconds_per_step"] / 0.5
    assert f"official code on Test Xeon: 0.50 s per step fp32 (ours {ratio:.2f}x)" in format_report(result)

    # Without a file there is nothing to compare with: no machine's numbers are built in.
    assert main(["bench", "--model", "tiny", "--views", "2", "--latent", "8", "--steps", "1", "--warmup", "0",
                 "--alone-repeats", "1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert "official_cpu" not in result and "official code" not in format_report(result)

    # A file without a run of this size fails before anything is built, and says how to get one.
    assert main(["bench", "--model", "tiny", "--views", "8", "--official", str(official)]) == 2
    assert "no float32 run with 8 views at latent 16x16; rerun tests/bench_official.py" in capsys.readouterr().err


def shared_text_savings(network: torch.nn.Module, rows: int, text_tokens: int = 77) -> int:
    """FLOP the broadcast text context saves in ``network``: the cross-attention key and value projections of
    ``text_tokens`` tokens, done once instead of once per row."""
    from comfy.ldm.modules.attention import BasicTransformerBlock

    return sum(
        2 * 2 * text_tokens * block.attn2.to_k.in_features * block.attn2.to_k.out_features * (rows - 1)
        for block in network.modules() if isinstance(block, BasicTransformerBlock)
    )


def test_bench_counts_the_work_of_a_step_and_the_floor_it_puts_on_the_time(comfy_host):
    """``flops``: the replayed networks' work per step, the achieved rate and the floor. The pack's oneDNN layers
    and PyTorch's plain ones do the same products, except the text keys/values the broadcast context saves:
    the two counts differ by exactly that, computed here from the networks' layers."""
    from diffportrait3d.bench.benchmark import BenchConfig, build_random_models, run_benchmark

    counts = {}
    for cpu_matmul in ("onednn", "pytorch"):
        models = build_random_models("tiny", cpu_matmul=cpu_matmul)
        config = BenchConfig(model="tiny", views=VIEWS, latent=SIZE, steps=1, warmup=0, alone_repeats=1,
                             cpu_matmul=cpu_matmul, flops=True)
        result = run_benchmark(config, models)
        flops = result["flops_per_step"]
        assert set(flops) == {"appearance_net", "pose_controlnet", "unet", "total"}
        assert all(flops[part] > 0 for part in ("appearance_net", "pose_controlnet", "unet"))
        assert flops["total"] == flops["appearance_net"] + flops["pose_controlnet"] + flops["unet"]
        assert result["achieved_gflops"] == pytest.approx(flops["total"] / result["seconds_per_step"] / 1e9)
        assert result["floor_seconds_per_step"] == pytest.approx(flops["total"] / result["best_matmul_gflops"] / 1e9)
        assert result["floor_seconds_per_step"] < result["seconds_per_step"]
        products = result["product_seconds_per_step"]
        assert set(products) == set(flops)
        assert all(products[part] > 0 for part in ("appearance_net", "pose_controlnet", "unet"))
        assert products["total"] == pytest.approx(sum(products[part] for part in result["parts_alone"]))
        assert result["product_gflops"] == pytest.approx(flops["total"] / products["total"] / 1e9)
        assert result["outside_products_seconds_per_step"] == pytest.approx(
            result["sum_of_parts_alone"] - products["total"])
        counts[cpu_matmul] = flops

    assert counts["pytorch"]["appearance_net"] == counts["onednn"]["appearance_net"]  # batch 1: nothing shared
    assert counts["pytorch"]["unet"] - counts["onednn"]["unet"] == shared_text_savings(
        models.unet.model.diffusion_model, rows=2 * VIEWS  # cond and uncond rows
    ) > 0
    assert counts["pytorch"]["pose_controlnet"] - counts["onednn"]["pose_controlnet"] == shared_text_savings(
        models.pose.control_model, rows=VIEWS  # conditional rows only
    ) > 0


@pytest.mark.skipif(not native_bf16_cpu(), reason="this CPU has no native bf16 products (AVX512-BF16 or AMX)")
def test_bf16_compute_does_the_same_work_as_float32(comfy_host):
    """With the opt-in bf16 compute the ControlNet casts its text context to bf16; the shared row is cast first,
    so the cast copy does not hold every view again and the key/value projections still run once."""
    from diffportrait3d.bench.benchmark import BenchConfig, run_benchmark

    def work(**storage):
        config = BenchConfig(model="tiny", views=VIEWS, latent=SIZE, steps=1, warmup=0, alone_repeats=1, flops=True,
                             **storage)
        return run_benchmark(config)["flops_per_step"]

    assert work(dtype="bf16", cpu_compute="bf16") == work()


def test_bench_sets_its_work_against_the_official_steps_work(comfy_host, capsys, tmp_path):
    from diffportrait3d.bench.benchmark import format_report
    from diffportrait3d.cli.main import main

    official = tmp_path / "official_here.json"
    official.write_text(json.dumps({"machine": {"cpu": "Test Xeon"}, "runs": [
        {"views": 2, "latent": "8x8", "autocast": "none", "apply_model_cond_median_s": 0.3,
         "apply_model_uc_median_s": 0.2, "flops_cond": 3 * 10**9, "flops_uc": 10**9, "flops_per_step": 4 * 10**9},
    ]}))
    assert main(["bench", "--model", "tiny", "--views", "2", "--latent", "8", "--steps", "1", "--warmup", "0",
                 "--alone-repeats", "1", "--official", str(official), "--flops", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["official_cpu"]["flops_per_step_fp32"] == 4 * 10**9
    assert result["work_vs_official"] == pytest.approx(result["flops_per_step"]["total"] / 4e9)
    assert result["floor_vs_official_step"] == pytest.approx(result["floor_seconds_per_step"] / 0.5)
    report = format_report(result)
    assert f"work per step {result['flops_per_step']['total'] / 1e9:.1f} GFLOP" in report
    assert f"official step 4.0 GFLOP: ours is {result['work_vs_official']:.2f}x its work" in report
    in_products = result["product_seconds_per_step"]["total"]
    assert f"{in_products:.3f} s in products" in report
    assert f"half the official step, 0.250 s, less the time in those ops leaves {0.25 - in_products:.3f} s" in report


@pytest.mark.skipif(heap_bytes_in_use() is None, reason="no glibc mallinfo2 here: --heap needs Linux with glibc >= 2.33")
def test_bench_reports_the_live_heap_peak_of_a_step(comfy_host, capsys):
    """``--heap``: the peak of live heap bytes in a replayed network call, over what was live before it (the
    weights among it); the activations it adds grow with the latent size."""
    from diffportrait3d.bench.benchmark import format_report
    from diffportrait3d.cli.main import main

    added = {}
    for latent in (8, 16):
        assert main(["bench", "--model", "tiny", "--views", "8", "--latent", str(latent), "--steps", "1", "--warmup",
                     "0", "--alone-repeats", "1", "--heap", "--json"]) == 0
        result = json.loads(capsys.readouterr().out)
        assert result["heap_peak_part"] in {"appearance_net", "pose_controlnet", "unet"}
        assert result["heap_before_peak_call_bytes"] >= result["weight_bytes"]
        assert result["heap_peak_bytes"] > result["heap_before_peak_call_bytes"]
        assert result["heap_peak_op"].startswith("aten.")
        assert f"peak {result['heap_peak_bytes'] / 2**30:.2f} GiB" in format_report(result)
        added[latent] = result["heap_peak_bytes"] - result["heap_before_peak_call_bytes"]
    assert added[16] > 2 * added[8]  # 4x the tokens per view


def test_bench_refuses_heap_without_glibc(comfy_host, capsys, monkeypatch):
    from diffportrait3d.bench import benchmark
    from diffportrait3d.cli.main import main

    monkeypatch.setattr(benchmark, "heap_bytes_in_use", lambda: None)
    assert main(["bench", "--model", "tiny", "--heap"]) == 2
    assert "heap needs glibc's mallinfo2" in capsys.readouterr().err


def test_huge_page_setup_reads_the_kernel_mode_and_the_torch_switch(comfy_host, tmp_path, monkeypatch):
    from diffportrait3d.bench.benchmark import format_report, huge_page_setup

    mode_file = tmp_path / "enabled"
    mode_file.write_text("always [madvise] never\n")
    monkeypatch.delenv("THP_MEM_ALLOC_ENABLE", raising=False)
    assert huge_page_setup(mode_file) == {"kernel_mode": "madvise", "THP_MEM_ALLOC_ENABLE": None}
    monkeypatch.setenv("THP_MEM_ALLOC_ENABLE", "1")
    assert huge_page_setup(mode_file)["THP_MEM_ALLOC_ENABLE"] == "1"
    assert huge_page_setup(tmp_path / "missing")["kernel_mode"] is None  # not Linux, or no THP
    mode_file.write_text("[always] madvise never\n")
    assert huge_page_setup(mode_file)["kernel_mode"] == "always"

    result = {
        "model": "tiny", "views": 1, "latent": [8, 8], "weight_dtype": "fp32", "compute_dtype": "float32",
        "device": "cpu", "cpu_matmul": "onednn", "threads": 1, "torch": "x", "load_average_before": 0.0,
        "seconds_per_step": 1.0, "steps_timed": 1, "step_seconds": [1.0], "breakdown": {},
        "unet_calls_per_step": 1, "parts_alone": {}, "sum_of_parts_alone": 1.0, "overhead_over_parts": 0.0,
        "peak_memory_bytes": 1, "rss_after_build_bytes": 1, "weight_bytes": 1,
        "huge_pages": {"kernel_mode": "madvise", "THP_MEM_ALLOC_ENABLE": None},
    }
    assert "THP_MEM_ALLOC_ENABLE=1" in format_report(result)
    result["huge_pages"]["THP_MEM_ALLOC_ENABLE"] = "1"
    assert "THP_MEM_ALLOC_ENABLE" not in format_report(result)


def test_bench_builds_bf16_weights_without_float32_copies(comfy_host):
    from diffportrait3d.bench.benchmark import build_random_models

    models = build_random_models("tiny", "bf16", seed=0)
    for module in (models.unet.model.diffusion_model, models.appearance.model, models.cross_view.model,
                   models.pose.control_model):
        dtypes = {p.dtype for p in module.parameters()}
        assert dtypes == {torch.bfloat16}, dtypes
        assert all(torch.isfinite(p.float()).all() for p in module.parameters())


def test_bench_computes_in_bf16_only_with_bf16_weights(comfy_host, capsys):
    from diffportrait3d.cli.main import main

    assert main(["bench", "--model", "tiny", "--views", "2", "--latent", "8", "--steps", "1", "--warmup", "0",
                 "--alone-repeats", "1", "--dtype", "bf16", "--cpu-compute", "bf16", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["weight_dtype"], result["cpu_compute"], result["compute_dtype"]) == ("bf16", "bf16", "bfloat16")
    assert result["seconds_per_step"] > 0

    assert main(["bench", "--model", "tiny", "--cpu-compute", "bf16"]) == 2
    assert "cpu_compute bf16 computes with the weights stored in bf16: set dtype bf16 too (--dtype bf16)" in (
        capsys.readouterr().err
    )


def test_views_share_one_text_projection_in_the_unet_and_the_controlnet(tiny_dp3d, monkeypatch):
    """All rows of a guided step carry the same text: the UNet (SharedTextContext, installed by the loader with
    the CPU layers) and the pose ControlNet (SharedTextControlNet) get it as one broadcast row, their
    cross-attention key projections multiply 77 tokens once, and the step is the one computed with a context
    per row."""
    import comfy.controlnet
    import comfy.patcher_extension as ext

    from diffportrait3d.nodes.cpu.shared_text import WRAPPER_KEY, SharedTextControlNet

    model, positive, negative, noise = official_views_setup(tiny_dp3d)
    seen = {}

    def record(name):
        def hook(layer, inputs):
            seen.setdefault(name, []).append((inputs[0].shape[0], inputs[0].stride(0)))
        return hook

    key_projections = {
        "unet": next(m.attn2.to_k for m in model.model.diffusion_model.modules() if hasattr(m, "attn2")),
        "controlnet": next(m.attn2.to_k for m in tiny_dp3d["pose"].control_model.modules() if hasattr(m, "attn2")),
    }
    handles = [layer.register_forward_pre_hook(record(name)) for name, layer in key_projections.items()]
    try:
        shared = guided_step(model, positive, negative, noise)
        assert seen["unet"] == [(2 * VIEWS, 0)]  # cond and uncond rows, one broadcast text row
        assert seen["controlnet"] == [(VIEWS, 0)]  # conditional rows only
        seen.clear()
        per_row = model.clone()
        per_row.remove_wrappers_with_key(ext.WrappersMP.DIFFUSION_MODEL, WRAPPER_KEY)
        monkeypatch.setattr(SharedTextControlNet, "get_control", comfy.controlnet.ControlNet.get_control)
        apart = guided_step(per_row, positive, negative, noise)
        assert all(stride != 0 for calls in seen.values() for _, stride in calls)
    finally:
        for handle in handles:
            handle.remove()
    assert_equal_up_to_batch_shape_rounding(shared, apart)
