"""Parity with the official DiffPortrait360 code, inside the real ComfyUI.

Every ``golden_backhead_apply*`` / ``golden_360_apply_*`` file of the golden directory (default:
tests/fixtures/tiny360; override with $DP360_GOLDEN_DIR, which then also holds tiny_360.safetensors,
tiny_360_config.json, tiny_backhead.safetensors and tiny_backhead_config.json) is reproduced through the
project's converter (family recognised by the keys), loaders and patches: eps max |diff| <= 1e-4; every
``golden_360_ddim_*`` / ``golden_backhead_ddim*`` file's guided DDIM (eta 0.5, cfg 3, the official float16
schedule, recorded start and per-step noise) with the pack's sampler: each step's eps <= 1e-4, final <= 1e-3.
The cross-view modules are placed from the converted file's record; V <= 8 views form one window. The
360 cond call reads the dual reference ([front ; back] bank entries): the Appearance Reference Encoder applied
twice, front then back.
"""

import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_host_parity import CaptureDenoised, eps_of, guided_call_eps, pose_conditioning, run_guided

pytestmark = pytest.mark.host

GOLDEN_DIR = Path(os.environ.get("DP360_GOLDEN_DIR", Path(__file__).parent / "fixtures" / "tiny360"))
BACKHEAD_FILES = sorted(GOLDEN_DIR.glob("golden_backhead_apply*.safetensors"))
APPLY_360_FILES = sorted(GOLDEN_DIR.glob("golden_360_apply_*.safetensors"))
DDIM_FILES = sorted(GOLDEN_DIR.glob("golden_360_ddim_*.safetensors")) + sorted(GOLDEN_DIR.glob("golden_backhead_ddim*.safetensors"))
EPS_TOLERANCE = 1e-4
LATENT_TOLERANCE = 1e-3
MODELS = {"dp360": "tiny_360", "dp360_backhead": "tiny_backhead"}


@pytest.fixture(scope="module")
def converted(comfy_host, tmp_path_factory):
    """Both tiny models through ``convert`` (fp32) and the loaders, each loader told the family it needs."""
    from diffportrait3d.kernels.checkpoint.convert import convert_checkpoint
    from diffportrait3d.nodes.model_loading import (
        load_appearance_net,
        load_cross_view_modules,
        load_dp3d_unet,
        load_pose_controlnet,
    )

    out = tmp_path_factory.mktemp("tiny360_converted")
    networks = {}
    for family, stem in MODELS.items():
        report = convert_checkpoint(
            GOLDEN_DIR / f"{stem}.safetensors", out, dtype="fp32", config_path=GOLDEN_DIR / f"{stem}_config.json"
        )
        assert report.family == family
        files = {component: str(path) for component, (path, _, _) in report.written.items()}
        networks[family] = {
            "files": files,
            "unet": load_dp3d_unet(files["unet"], family=family),
            "appearance": load_appearance_net(files["appearance"], family=family),
            "pose": load_pose_controlnet(files["pose_controlnet"], family=family),
        }
        if "cross_view" in files:
            networks[family]["cross_view"] = load_cross_view_modules(files["cross_view"], family=family)
    return networks


def guided_eps(networks: dict, golden: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(eps_cond, eps_uc) of one guided model call with the front reference only, official guidance (the uc
    call keeps the text and the cross-view modules, drops the reference and the pose residuals)."""
    from diffportrait3d.nodes.appearance_reference import ReferenceLatent, apply_appearance_reference
    from diffportrait3d.nodes.cross_view import CrossViewSettings, apply_cross_view

    model = apply_appearance_reference(
        networks["unet"], networks["appearance"], ReferenceLatent(model_latent=golden["reference_image_noisy"])
    )
    if "cross_view" in networks:
        model = apply_cross_view(model, networks["cross_view"], CrossViewSettings())
    return guided_call_eps(model, networks, golden)


@pytest.mark.parametrize("golden_file", BACKHEAD_FILES, ids=lambda p: p.stem)
def test_back_head_model_call_matches_official_eps(converted, golden_file):
    golden = load_file(golden_file)
    eps_cond, eps_uc = guided_eps(converted["dp360_backhead"], golden)
    cond_error = (eps_cond - golden["eps_cond"]).abs().max().item()
    uncond_error = (eps_uc - golden["eps_uc"]).abs().max().item()
    print(f"{golden_file.name}: eps_cond max|diff| {cond_error:.2e}, eps_uc max|diff| {uncond_error:.2e}")
    assert cond_error <= EPS_TOLERANCE
    assert uncond_error <= EPS_TOLERANCE


@pytest.mark.parametrize("golden_file", APPLY_360_FILES, ids=lambda p: p.stem)
def test_360_unconditional_call_matches_official_eps(converted, golden_file):
    """The uc path: no reference, no pose, all 20 cross-view modules (placed from the file) over the views."""
    golden = load_file(golden_file)
    _, eps_uc = guided_eps(converted["dp360"], golden)
    error = (eps_uc - golden["eps_uc"]).abs().max().item()
    print(f"{golden_file.name}: V={golden['x_noisy'].shape[0]} eps_uc max|diff| {error:.2e}")
    assert error <= EPS_TOLERANCE


@pytest.mark.parametrize("golden_file", APPLY_360_FILES, ids=lambda p: p.stem)
def test_360_guided_call_with_front_and_back_references_matches_official_eps(converted, golden_file):
    """The Appearance Reference Encoder applied twice (front, then back) gives the official dual reference: the
    cond path reads ``cat([bank_front, bank_back])``, the pose residuals and all 20 cross-view modules; the uc
    path of the same guided call drops both references."""
    from diffportrait3d.nodes.appearance_reference import ReferenceLatent, apply_appearance_reference
    from diffportrait3d.nodes.cross_view import CrossViewSettings, apply_cross_view

    golden = load_file(golden_file)
    networks = converted["dp360"]
    front = apply_appearance_reference(
        networks["unet"], networks["appearance"], ReferenceLatent(model_latent=golden["reference_image_noisy"])
    )
    both = apply_appearance_reference(
        front, networks["appearance"], ReferenceLatent(model_latent=golden["more_reference_image_noisy_0"])
    )
    eps_cond, eps_uc = guided_call_eps(apply_cross_view(both, networks["cross_view"], CrossViewSettings()), networks, golden)
    cond_error = (eps_cond - golden["eps_cond"]).abs().max().item()
    uncond_error = (eps_uc - golden["eps_uc"]).abs().max().item()
    print(f"{golden_file.name}: V={golden['x_noisy'].shape[0]} eps_cond (front + back) max|diff| {cond_error:.2e}, "
          f"eps_uc {uncond_error:.2e}")
    assert cond_error <= EPS_TOLERANCE
    assert uncond_error <= EPS_TOLERANCE
    front_only, _ = guided_call_eps(apply_cross_view(front, networks["cross_view"], CrossViewSettings()), networks, golden)
    assert (front_only - golden["eps_cond"]).abs().max().item() > 100 * EPS_TOLERANCE  # the back reference counts


@pytest.mark.parametrize("golden_file", APPLY_360_FILES[:1], ids=lambda p: p.stem)
def test_the_360_uc_path_depends_on_the_placed_modules(converted, golden_file):
    """Without the cross-view modules the uc eps is far off: the parity above checks their placement."""
    golden = load_file(golden_file)
    without = {key: value for key, value in converted["dp360"].items() if key != "cross_view"}
    _, eps_uc = guided_eps(without, golden)
    assert (eps_uc - golden["eps_uc"]).abs().max().item() > 100 * EPS_TOLERANCE


def test_each_loader_refuses_another_family(converted):
    from diffportrait3d.kernels.checkpoint.errors import ConversionError
    from diffportrait3d.nodes.model_loading import (
        load_appearance_net,
        load_cross_view_modules,
        load_dp3d_unet,
    )

    back_head = converted["dp360_backhead"]["files"]
    with pytest.raises(ConversionError) as caught:
        load_appearance_net(back_head["appearance"], family="dp360")
    assert str(caught.value) == (
        "appearance_net: diffportrait360_backhead_appearance.safetensors is a DiffPortrait360 back-of-head generator "
        "file, this input needs the DiffPortrait360's diffportrait360_appearance.safetensors (made by: python -m "
        "diffportrait3d convert model_state-340000.th --out ComfyUI/models/diffportrait3d)"
    )
    with pytest.raises(ConversionError, match="unet: diffportrait360_unet.safetensors is a DiffPortrait360 file, "
                       "this input needs the DiffPortrait3D's diffportrait3d_unet.safetensors"):
        load_dp3d_unet(converted["dp360"]["files"]["unet"], family="dp3d")
    with pytest.raises(ConversionError, match="is a DiffPortrait360 file, this input needs the DiffPortrait3D's"):
        load_cross_view_modules(converted["dp360"]["files"]["cross_view"], family="dp3d")


def test_360_modules_sit_where_the_file_says(converted):
    """After the input blocks holding a ResBlock, none after the Downsamples or in the middle block, one closing
    every output block (after its upsampler); ejecting leaves the UNet as it was."""
    import comfy.model_management
    from comfy.ldm.modules.diffusionmodules.openaimodel import Downsample, Upsample

    from diffportrait3d.kernels.model.cross_view_attention import CrossViewModule
    from diffportrait3d.nodes.cross_view import CrossViewInjection

    comfy.model_management.unload_all_models()  # a patched clone still loaded would carry its injected modules
    networks = converted["dp360"]
    unet = networks["unet"].model.diffusion_model
    assert not any(isinstance(m, CrossViewModule) for m in unet.modules())
    injection = CrossViewInjection(networks["cross_view"])
    injection.inject(networks["unet"])
    try:
        def modules_in(block):
            return [i for i, layer in enumerate(block) if isinstance(layer, CrossViewModule)]

        after_input = [i for i, block in enumerate(unet.input_blocks) if modules_in(block)]
        assert after_input == [1, 2, 4, 5, 7, 8, 10, 11]
        assert all(isinstance(unet.input_blocks[i][0], Downsample) for i in (3, 6, 9))
        assert modules_in(unet.middle_block) == []
        upsampling = []
        for j, block in enumerate(unet.output_blocks):
            assert modules_in(block) == [len(block) - 1]
            if isinstance(block[len(block) - 2], Upsample):
                upsampling.append(j)
        assert upsampling == [2, 5, 8]
    finally:
        injection.eject(networks["unet"])
    assert not any(isinstance(m, CrossViewModule) for m in unet.modules())


def test_a_missing_file_of_a_family_names_its_checkpoint_and_command(comfy_host):
    from diffportrait3d.nodes.model_loading import model_file_path

    with pytest.raises(FileNotFoundError) as caught:
        model_file_path("nothing.safetensors", "back_unet", "unet", family="dp360_backhead")
    message = str(caught.value)
    assert "Put diffportrait360_backhead_unet.safetensors there: it is made from back_head-230000.th, the " \
        "DiffPortrait360 back-of-head generator, from the Hugging Face repository gym890/diffportrait360" in message
    assert "python -m diffportrait3d convert back_head-230000.th --out " in message


class RecordedNoise:
    """noise_sampler handing out the official run's per-step noise, in order (RNG-free parity)."""

    def __init__(self, steps: torch.Tensor):
        self.steps = list(steps)

    def __call__(self, sigma, sigma_next):
        return self.steps.pop(0)


def ddim_family(golden_file: Path) -> str:
    return "dp360_backhead" if golden_file.name.startswith("golden_backhead") else "dp360"


def references_of(golden: dict) -> list[torch.Tensor]:
    """Front reference, then the back one when the file has it (the 360 model's dual reference)."""
    return [golden["reference_latent"]] + ([golden["back_reference_latent"]] if "back_reference_latent" in golden else [])


@pytest.mark.parametrize("golden_file", DDIM_FILES, ids=lambda p: p.stem)
def test_float16_schedule_scalars_match_the_official_ones(converted, golden_file):
    """The per-step scalars of the 'float16 (DiffPortrait360 official)' schedule, as the sampler derives them from
    its sigmas, equal the recorded float32 scalars exactly; so does the q_sample start of a 3D-aware run."""
    from diffportrait3d.kernels.model.ddpm_schedule import float16_q_sample_coefficients
    from diffportrait3d.kernels.noise.start_latent import q_sample_float16
    from diffportrait3d.nodes.sampler import float16_coefficients, official_sigmas

    golden = load_file(golden_file)
    unet = converted[ddim_family(golden_file)]["unet"]
    sigmas = official_sigmas(unet, golden["step_x"].shape[0])
    steps = float16_coefficients(unet.get_model_object("model_sampling"), sigmas, eta=0.5)
    assert [s.a_t for s in steps] == golden["step_a_t"].tolist()
    assert [s.a_prev for s in steps] == golden["step_a_prev"].tolist()
    assert [s.sigma for s in steps] == golden["step_sigma_t"].tolist()
    assert [s.sqrt_one_minus_a_t for s in steps] == golden["step_sqrt_one_minus_a_t"].tolist()
    if "feature_control" in golden:
        t = int(golden["q_sample_t"][0])
        assert list(float16_q_sample_coefficients(t)) == golden["q_sample_coef"].float().tolist()
        x_t = q_sample_float16(golden["feature_control"], golden["q_sample_noise"], t)
        assert torch.equal(x_t, golden["x_T"])


def guided_ddim_360(networks: dict, golden: dict, schedule: str, capture=None, eta: float = 0.5) -> torch.Tensor:
    """Final latents (model space) of the pack's guided DDIM (cfg 3) from the golden's x_T with its
    recorded per-step noise: the golden's references in order, the cross-view modules when the family has them."""
    from diffportrait3d.nodes.appearance_reference import ReferenceLatent, apply_appearance_reference
    from diffportrait3d.nodes.cross_view import CrossViewSettings, apply_cross_view
    from diffportrait3d.nodes.sampler import ddim_sampler, official_sigmas

    model = networks["unet"]
    for reference in references_of(golden):
        model = apply_appearance_reference(model, networks["appearance"], ReferenceLatent(model_latent=reference))
    if "cross_view" in networks:
        model = apply_cross_view(model, networks["cross_view"], CrossViewSettings())
    positive, negative = pose_conditioning(networks, golden["c_crossattn_0"], golden["c_concat_0"])
    sigmas = official_sigmas(model, golden["step_x"].shape[0])
    x_in = golden["x_T"] * torch.sqrt(1 + sigmas[0] ** 2)  # the official first model input is x_T itself
    sampler = ddim_sampler(eta, schedule, RecordedNoise(golden["step_noise"]))
    return run_guided(model, positive, negative, x_in, sigmas, 3.0, capture, sampler)


@pytest.mark.parametrize("golden_file", DDIM_FILES, ids=lambda p: p.stem)
def test_guided_ddim_with_the_float16_schedule_matches_official_samples(converted, golden_file):
    """5-step DDIM through ComfyUI's CFGGuider and the pack's sampler: the 360 model with the dual reference and
    its recorded 3D-aware start x_T, the back-head model (one view, one reference) from its recorded x_T."""
    from diffportrait3d.kernels.model.ddpm_schedule import FLOAT16

    golden = load_file(golden_file)
    capture = CaptureDenoised()
    samples = guided_ddim_360(converted[ddim_family(golden_file)], golden, FLOAT16, capture)
    assert len(capture.steps) == golden["step_x"].shape[0]
    worst = 0.0
    for i, (x, sigma, cond_denoised, uncond_denoised) in enumerate(capture.steps):
        for name, denoised in (("step_eps_cond", cond_denoised), ("step_eps_uncond", uncond_denoised)):
            error = (eps_of(x, sigma, denoised) - golden[name][i]).abs().max().item()
            worst = max(worst, error)
            assert error <= EPS_TOLERANCE, f"step {i}: {name} max|diff| {error:.2e}"
    error = (samples - golden["samples"]).abs().max().item()
    print(f"{golden_file.name}: V={golden['x_T'].shape[0]}, {len(capture.steps)} steps, worst step eps max|diff| "
          f"{worst:.2e}, final latents max|diff| {error:.2e}")
    assert error <= LATENT_TOLERANCE


@pytest.mark.parametrize("golden_file", DDIM_FILES[-1:], ids=lambda p: p.stem)
def test_the_float32_schedule_misses_the_official_360_samples(converted, golden_file):
    """The same run with the float32 schedule ends ~1e-2 away: the parity above depends on the float16 scalars."""
    from diffportrait3d.kernels.model.ddpm_schedule import FLOAT32

    golden = load_file(golden_file)
    samples = guided_ddim_360(converted[ddim_family(golden_file)], golden, FLOAT32)
    assert (samples - golden["samples"]).abs().max().item() > 3 * LATENT_TOLERANCE


@pytest.mark.parametrize("golden_file", DDIM_FILES[:1], ids=lambda p: p.stem)
def test_the_cross_view_sampler_node_runs_the_float16_schedule(converted, golden_file):
    """The node's ``schedule`` reaches its DDIM: eta 0 (no noise draws), the golden's 3D-aware x_T as its NOISE;
    the node's float16 run equals the guider-level float16 run, and its float32 run is another one."""
    from nodes import ControlNetApplyAdvanced

    from diffportrait3d.kernels.model.ddpm_schedule import FLOAT16, FLOAT32
    from diffportrait3d.nodes.appearance_reference import ReferenceLatent, apply_appearance_reference
    from diffportrait3d.nodes.noise_init import ThreeDAwareNoise
    from diffportrait3d.nodes.sampler import CrossViewSampler

    golden = load_file(golden_file)
    networks = converted[ddim_family(golden_file)]
    model = networks["unet"]
    for reference in references_of(golden):
        model = apply_appearance_reference(model, networks["appearance"], ReferenceLatent(model_latent=reference))
    text = [[golden["c_crossattn_0"], {}]]
    hint = ((golden["c_concat_0"] + 1) / 2).movedim(1, -1)
    positive, negative = ControlNetApplyAdvanced().apply_controlnet(text, text, networks["pose"], hint, 1.0, 0.0, 1.0)
    sampling = model.get_model_object("model_sampling")
    noise = ThreeDAwareNoise(golden["x_T"], 0, model.get_model_object("latent_format"), 1.0, float(sampling.sigma_max))
    empty = {"samples": torch.zeros_like(golden["x_T"])}

    def node_run(schedule):
        latent = CrossViewSampler.execute(
            model, networks["cross_view"], positive, negative, empty, 0, golden["step_x"].shape[0], 3.0, 0.0,
            "official", 8, 4, "pyramid", "official (uncond only)", noise=noise, schedule=schedule,
        ).result[0]
        return model.get_model_object("latent_format").process_in(latent["samples"])

    float16 = node_run(FLOAT16)
    expected = guided_ddim_360(networks, golden, FLOAT16, eta=0.0)
    # same operations; float32 rounding of the start's round trip, relative to latents of magnitude up to ~20
    torch.testing.assert_close(float16, expected, rtol=1e-5, atol=1e-5)
    assert (node_run(FLOAT32) - float16).abs().max().item() > 3 * LATENT_TOLERANCE
