"""State-dict layout of the official DiffPortrait3D model, derived from its architecture config.

The official checkpoint is ``ControlLDMReferenceOnlyPose.state_dict()`` (LDM/ControlNet codebase).
Everything here is computed from the yaml-equivalent config; no key list is stored. Conventions:

* keys are ``prefix + name`` where a non-empty prefix ends with ``"."``;
* shapes are tuples of ints, exactly as ``tensor.shape`` of the official module;
* attention widths in the UNet equal the block's channels (heads never change a shape).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

Shapes = dict[str, tuple[int, ...]]

DIFFUSION_PREFIX = "model.diffusion_model."
APPEARANCE_PREFIX = "control_model."
POSE_PREFIX = "pose_control_model."
AUTOENCODER_PREFIX = "first_stage_model."
TEXT_TRANSFORMER_PREFIX = "cond_stage_model.transformer."
TEXT_ENCODER_PREFIX = TEXT_TRANSFORMER_PREFIX + "text_model."

# LatentDiffusion.register_schedule buffers plus ``logvar``; each holds one value per timestep.
SCHEDULE_BUFFERS = (
    "betas",
    "alphas_cumprod",
    "alphas_cumprod_prev",
    "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod",
    "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod",
    "posterior_variance",
    "posterior_log_variance_clipped",
    "posterior_mean_coef1",
    "posterior_mean_coef2",
    "logvar",
)

# ControlNet ``input_hint_block``: 3x3 convs separated by SiLUs (so at even indices 0, 2, ..., 14);
# the last one maps to ``model_channels``.
HINT_BLOCK_WIDTHS = (16, 16, 32, 32, 96, 96, 256)

# ``openai/clip-vit-large-patch14`` text tower, as loaded by FrozenCLIPEmbedder.
CLIP_VIT_L14_TEXT = {"hidden": 768, "layers": 12, "mlp": 3072, "vocab": 49408, "positions": 77}


# ------------------------------------------------------------------------------------ primitives


def _conv(prefix: str, out_ch: int, in_ch: int, kernel: int = 3) -> Shapes:
    return {f"{prefix}.weight": (out_ch, in_ch, kernel, kernel), f"{prefix}.bias": (out_ch,)}


def _linear(prefix: str, out_features: int, in_features: int, bias: bool = True) -> Shapes:
    shapes = {f"{prefix}.weight": (out_features, in_features)}
    if bias:
        shapes[f"{prefix}.bias"] = (out_features,)
    return shapes


def _norm(prefix: str, channels: int) -> Shapes:
    """GroupNorm or LayerNorm with affine weights."""
    return {f"{prefix}.weight": (channels,), f"{prefix}.bias": (channels,)}


def _merge(parts: Iterable[Shapes]) -> Shapes:
    merged: Shapes = {}
    for part in parts:
        clash = merged.keys() & part.keys()
        if clash:
            raise ValueError(f"duplicate state-dict keys: {sorted(clash)[:5]}")
        merged.update(part)
    return merged


def _attention(prefix: str, width: int, context_width: int) -> Shapes:
    """ldm ``CrossAttention`` / AnimateDiff ``VersatileAttention``: q/k/v without bias, ``to_out.0``."""
    return _merge(
        [
            _linear(f"{prefix}.to_q", width, width, bias=False),
            _linear(f"{prefix}.to_k", width, context_width, bias=False),
            _linear(f"{prefix}.to_v", width, context_width, bias=False),
            _linear(f"{prefix}.to_out.0", width, width),
        ]
    )


def _geglu_feed_forward(prefix: str, width: int, mult: int = 4) -> Shapes:
    """``ff.net.0.proj`` projects to twice the inner width (value and gate), ``ff.net.2`` back."""
    inner = width * mult
    return _merge(
        [_linear(f"{prefix}.net.0.proj", 2 * inner, width), _linear(f"{prefix}.net.2", width, inner)]
    )


# ------------------------------------------------------------------------------------ UNet walk


@dataclass(frozen=True)
class UNetLayer:
    """One entry of a ``TimestepEmbedSequential``: ``kind`` is conv | res | attn | down | up."""

    kind: str
    in_channels: int
    out_channels: int
    depth: int = 0  # transformer blocks inside an ``attn`` layer


@dataclass(frozen=True)
class UNetBlock:
    """One block of an openaimodel-style UNet and the resolution of its output."""

    location: str  # "input" | "middle" | "output"
    index: int
    layers: tuple[UNetLayer, ...]
    downsample_factor: int

    @property
    def key_prefix(self) -> str:
        return "middle_block" if self.location == "middle" else f"{self.location}_blocks.{self.index}"

    @property
    def channels(self) -> int:
        return self.layers[-1].out_channels

    @property
    def has_upsampler(self) -> bool:
        return any(layer.kind == "up" for layer in self.layers)


def _per_level(value, levels: int, name: str) -> list[int]:
    values = [value] * levels if isinstance(value, int) else list(value)
    if len(values) != levels:
        raise ValueError(f"{name} has {len(values)} entries for {levels} levels")
    return values


_UNSUPPORTED_UNET_OPTIONS = ("resblock_updown", "disable_self_attentions", "num_attention_blocks")


def unet_block_layout(params: dict) -> list[UNetBlock]:
    """The input, middle and output blocks of an ldm ``UNetModel``/``ControlNet`` built from ``params``.

    Follows openaimodel: ``num_res_blocks`` ResBlocks per level (each followed by a SpatialTransformer
    where the downsample factor is in ``attention_resolutions``), a Downsample after every level but
    the last; output levels mirror it with one extra ResBlock each, consuming the input skips in
    reverse, and an Upsample closing every level but the first.
    """
    for option in _UNSUPPORTED_UNET_OPTIONS:
        if params.get(option):
            raise ValueError(f"UNet option {option!r} is not supported by this layout")
    base = params["model_channels"]
    mults = list(params["channel_mult"])
    levels = len(mults)
    res_blocks = _per_level(params["num_res_blocks"], levels, "num_res_blocks")
    depths = _per_level(params.get("transformer_depth", 1), levels, "transformer_depth")
    middle_depth = params.get("transformer_depth_middle", depths[-1])
    attention_at = set(params["attention_resolutions"])
    use_attention = params.get("use_spatial_transformer", False)
    if not use_attention and attention_at:
        raise ValueError("only SpatialTransformer attention (use_spatial_transformer: true) is supported")

    blocks: list[UNetBlock] = []
    ch, ds = base, 1
    blocks.append(UNetBlock("input", 0, (UNetLayer("conv", params["in_channels"], ch),), ds))
    skip_channels = [ch]
    for level, mult in enumerate(mults):
        for _ in range(res_blocks[level]):
            layers = [UNetLayer("res", ch, base * mult)]
            ch = base * mult
            if ds in attention_at:
                layers.append(UNetLayer("attn", ch, ch, depths[level]))
            blocks.append(UNetBlock("input", len(blocks), tuple(layers), ds))
            skip_channels.append(ch)
        if level != levels - 1:
            ds *= 2
            blocks.append(UNetBlock("input", len(blocks), (UNetLayer("down", ch, ch),), ds))
            skip_channels.append(ch)

    blocks.append(
        UNetBlock(
            "middle",
            0,
            (UNetLayer("res", ch, ch), UNetLayer("attn", ch, ch, middle_depth), UNetLayer("res", ch, ch)),
            ds,
        )
    )

    index = 0
    for level in reversed(range(levels)):
        for i in range(res_blocks[level] + 1):
            layers = [UNetLayer("res", ch + skip_channels.pop(), base * mults[level])]
            ch = base * mults[level]
            if ds in attention_at:
                layers.append(UNetLayer("attn", ch, ch, depths[level]))
            if level and i == res_blocks[level]:
                layers.append(UNetLayer("up", ch, ch))
                ds //= 2
            blocks.append(UNetBlock("output", index, tuple(layers), ds))
            index += 1
    return blocks


def _resblock(prefix: str, in_ch: int, out_ch: int, emb_ch: int, scale_shift: bool) -> Shapes:
    parts = [
        _norm(f"{prefix}.in_layers.0", in_ch),
        _conv(f"{prefix}.in_layers.2", out_ch, in_ch),
        _linear(f"{prefix}.emb_layers.1", 2 * out_ch if scale_shift else out_ch, emb_ch),
        _norm(f"{prefix}.out_layers.0", out_ch),
        _conv(f"{prefix}.out_layers.3", out_ch, out_ch),
    ]
    if in_ch != out_ch:
        parts.append(_conv(f"{prefix}.skip_connection", out_ch, in_ch, kernel=1))
    return _merge(parts)


def _spatial_transformer(prefix: str, ch: int, depth: int, context_dim: int, linear_proj: bool) -> Shapes:
    def projection(name: str) -> Shapes:
        return _linear(f"{prefix}.{name}", ch, ch) if linear_proj else _conv(f"{prefix}.{name}", ch, ch, 1)

    parts = [_norm(f"{prefix}.norm", ch), projection("proj_in"), projection("proj_out")]
    for d in range(depth):
        block = f"{prefix}.transformer_blocks.{d}"
        parts += [
            _attention(f"{block}.attn1", ch, ch),
            _attention(f"{block}.attn2", ch, context_dim),
            _geglu_feed_forward(f"{block}.ff", ch),
            _norm(f"{block}.norm1", ch),
            _norm(f"{block}.norm2", ch),
            _norm(f"{block}.norm3", ch),
        ]
    return _merge(parts)


def _layer_shapes(prefix: str, layer: UNetLayer, params: dict) -> Shapes:
    emb_ch = 4 * params["model_channels"]
    resample_conv = params.get("conv_resample", True)
    if layer.kind == "conv":
        return _conv(prefix, layer.out_channels, layer.in_channels)
    if layer.kind == "res":
        scale_shift = params.get("use_scale_shift_norm", False)
        return _resblock(prefix, layer.in_channels, layer.out_channels, emb_ch, scale_shift)
    if layer.kind == "attn":
        linear_proj = params.get("use_linear_in_transformer", False)
        return _spatial_transformer(
            prefix, layer.out_channels, layer.depth, params["context_dim"], linear_proj
        )
    if layer.kind == "down":
        return _conv(f"{prefix}.op", layer.out_channels, layer.in_channels) if resample_conv else {}
    if layer.kind == "up":
        return _conv(f"{prefix}.conv", layer.out_channels, layer.in_channels) if resample_conv else {}
    raise ValueError(f"unknown UNet layer kind {layer.kind!r}")


def hint_block_shapes(hint_channels: int, model_channels: int, prefix: str = "") -> Shapes:
    """ControlNet ``input_hint_block``: hint image -> ``model_channels`` at the latent resolution."""
    widths = (hint_channels, *HINT_BLOCK_WIDTHS, model_channels)
    return _merge(
        _conv(f"{prefix}input_hint_block.{2 * i}", out_ch, in_ch)
        for i, (in_ch, out_ch) in enumerate(zip(widths[:-1], widths[1:], strict=True))
    )


def unet_shapes(
    params: dict,
    prefix: str = "",
    *,
    with_output_blocks: bool = True,
    with_out: bool = True,
    with_hint_block: bool = False,
    with_zero_convs: bool = False,
) -> Shapes:
    """Keys and shapes of an ldm UNet-family network (``unet_config``-style ``params``).

    Defaults give the plain denoising UNet (no motion modules). The appearance net is
    ``with_out=False, with_hint_block=True``; a ControlNet is ``with_output_blocks=False,
    with_out=False, with_hint_block=True, with_zero_convs=True`` (``zero_convs.{i}.0`` after every
    input block and ``middle_block_out.0``).
    """
    base = params["model_channels"]
    parts = [
        _linear(f"{prefix}time_embed.0", 4 * base, base),
        _linear(f"{prefix}time_embed.2", 4 * base, 4 * base),
    ]
    if with_hint_block:
        parts.append(hint_block_shapes(params["hint_channels"], base, prefix))
    for block in unet_block_layout(params):
        if block.location == "output" and not with_output_blocks:
            continue
        for position, layer in enumerate(block.layers):
            parts.append(_layer_shapes(f"{prefix}{block.key_prefix}.{position}", layer, params))
        if with_zero_convs and block.location == "input":
            parts.append(_conv(f"{prefix}zero_convs.{block.index}.0", block.channels, block.channels, 1))
        if with_zero_convs and block.location == "middle":
            parts.append(_conv(f"{prefix}middle_block_out.0", block.channels, block.channels, 1))
    if with_out:
        parts.append(_norm(f"{prefix}out.0", base * params["channel_mult"][0]))
        parts.append(_conv(f"{prefix}out.2", params["out_channels"], base * params["channel_mult"][0]))
    return _merge(parts)


# ------------------------------------------------------------------------------ motion modules


@dataclass(frozen=True)
class CrossViewPlacement:
    """Where one motion module (cross-view attention) of the denoising UNet sits."""

    key_prefix: str  # e.g. "input_blocks_motion_module.0.0" (without model.diffusion_model.)
    location: str  # "input" | "middle" | "output"
    block_index: int  # the input/output block it follows (middle: 0)
    order: int  # 0, or 1 for the second module after an upsampling output block
    channels: int
    downsample_factor: int


def _motion_settings(unet_params: dict) -> dict | None:
    extra = unet_params.get("unet_additional_kwargs") or {}
    return extra.get("motion_module_kwargs", {}) if extra.get("use_motion_module") else None


# Placement rules (by structure, never by index table): where a family puts its motion modules.
EVERY_BLOCK = "every block"  # DiffPortrait3D
RESBLOCK_INPUTS_AND_OUTPUTS = "input ResBlock blocks and output blocks"  # DiffPortrait360 (AnimateDiff mm_sd_v15)
PLACEMENT_RULES = (EVERY_BLOCK, RESBLOCK_INPUTS_AND_OUTPUTS)


def _module_names(block: UNetBlock, rule: str, input_count: int) -> list[str]:
    """The key prefixes of the modules that follow ``block`` under ``rule`` (``input_count``: input modules
    placed so far)."""
    if rule == EVERY_BLOCK:
        if block.location == "input":
            return [] if block.index == 0 else [f"input_blocks_motion_module.{block.index - 1}.0"]
        if block.location == "middle":
            return ["middle_block_motion_module.0"]
        orders = 2 if block.has_upsampler else 1
        return [f"output_blocks_motion_module.{block.index}.{order}" for order in range(orders)]
    if rule == RESBLOCK_INPUTS_AND_OUTPUTS:
        if block.location == "input":
            holds_resblock = any(layer.kind == "res" for layer in block.layers)
            return [f"input_blocks_motion_module.{input_count}.0"] if holds_resblock else []
        if block.location == "middle":
            return []
        return [f"output_blocks_motion_module.{block.index}.0"]
    raise ValueError(f"unknown cross-view placement rule {rule!r}; known: {', '.join(PLACEMENT_RULES)}")


def cross_view_placements(unet_params: dict, rule: str = EVERY_BLOCK) -> list[CrossViewPlacement]:
    """Motion modules of the official UNet, in execution order; empty without ``use_motion_module``.

    ``EVERY_BLOCK`` (DiffPortrait3D): every input block but the first (the input conv) is followed by one
    module, the middle block has one (between its transformer and last ResBlock; the official forward runs
    it only in the unconditional path), and every output block one, or two in a row when it ends in an
    upsampler. ``RESBLOCK_INPUTS_AND_OUTPUTS`` (DiffPortrait360): one after every input block that holds a
    ResBlock (none after the input conv or a Downsample, numbered in order), none in the middle block, one
    after every output block (after its upsampler). ``motion_module_resolutions`` is ignored, as in the
    official code.
    """
    if _motion_settings(unet_params) is None:
        return []
    placements = []
    input_count = 0
    for block in unet_block_layout(unet_params):
        names = _module_names(block, rule, input_count)
        if block.location == "input":
            input_count += len(names)
        for order, name in enumerate(names):
            placements.append(
                CrossViewPlacement(
                    name, block.location, block.index, order, block.channels, block.downsample_factor
                )
            )
    return placements


def _motion_module(prefix: str, channels: int, settings: dict) -> Shapes:
    """AnimateDiff ``VanillaTemporalModule``: a ``temporal_transformer`` of temporal self-attention."""
    heads = settings.get("num_attention_heads", 8)
    width = heads * (channels // heads // settings.get("temporal_attention_dim_div", 1))
    block_types = settings.get("attention_block_types", ("Temporal_Self", "Temporal_Self"))
    if any(kind != "Temporal_Self" for kind in block_types):
        raise ValueError(f"only Temporal_Self motion attention is supported, got {block_types}")
    positional = settings.get("temporal_position_encoding", False)
    max_len = settings.get("temporal_position_encoding_max_len", 24)

    root = f"{prefix}temporal_transformer"
    parts = [_norm(f"{root}.norm", channels), _linear(f"{root}.proj_in", width, channels)]
    for b in range(settings.get("num_transformer_block", 2)):
        block = f"{root}.transformer_blocks.{b}"
        for a in range(len(block_types)):
            parts.append(_attention(f"{block}.attention_blocks.{a}", width, width))
            if positional:
                parts.append({f"{block}.attention_blocks.{a}.pos_encoder.pe": (1, max_len, width)})
            parts.append(_norm(f"{block}.norms.{a}", width))
        parts += [_geglu_feed_forward(f"{block}.ff", width), _norm(f"{block}.ff_norm", width)]
    parts.append(_linear(f"{root}.proj_out", channels, width))
    return _merge(parts)


def motion_module_shapes(unet_params: dict, prefix: str = "", rule: str = EVERY_BLOCK) -> Shapes:
    """Keys and shapes of all motion modules of the UNet (including the ``pos_encoder.pe`` buffers)."""
    settings = _motion_settings(unet_params)
    return _merge(
        _motion_module(f"{prefix}{place.key_prefix}.", place.channels, settings)
        for place in cross_view_placements(unet_params, rule)
    )


# ----------------------------------------------------------------------------- autoencoder, CLIP


def _vae_resblock(prefix: str, in_ch: int, out_ch: int) -> Shapes:
    parts = [
        _norm(f"{prefix}.norm1", in_ch),
        _conv(f"{prefix}.conv1", out_ch, in_ch),
        _norm(f"{prefix}.norm2", out_ch),
        _conv(f"{prefix}.conv2", out_ch, out_ch),
    ]
    if in_ch != out_ch:
        parts.append(_conv(f"{prefix}.nin_shortcut", out_ch, in_ch, kernel=1))
    return _merge(parts)


def _vae_attention(prefix: str, ch: int) -> Shapes:
    parts = [_norm(f"{prefix}.norm", ch)] + [
        _conv(f"{prefix}.{name}", ch, ch, 1) for name in ("q", "k", "v", "proj_out")
    ]
    return _merge(parts)


def _vae_middle(prefix: str, ch: int) -> Shapes:
    return _merge(
        [
            _vae_resblock(f"{prefix}.block_1", ch, ch),
            _vae_attention(f"{prefix}.attn_1", ch),
            _vae_resblock(f"{prefix}.block_2", ch, ch),
        ]
    )


def autoencoder_shapes(ddconfig: dict, embed_dim: int, prefix: str = "") -> Shapes:
    """Keys and shapes of the LDM ``AutoencoderKL`` (encoder, decoder, quant_conv, post_quant_conv)."""
    ch, mults = ddconfig["ch"], list(ddconfig["ch_mult"])
    levels, n_res = len(mults), ddconfig["num_res_blocks"]
    z_ch = ddconfig["z_channels"]
    moments = 2 * z_ch if ddconfig.get("double_z", True) else z_ch
    attn_at = set(ddconfig.get("attn_resolutions", ()))

    enc = f"{prefix}encoder"
    parts = [_conv(f"{enc}.conv_in", ch, ddconfig["in_channels"])]
    block_in, resolution = ch, ddconfig["resolution"]
    for level, mult in enumerate(mults):
        for j in range(n_res):
            parts.append(_vae_resblock(f"{enc}.down.{level}.block.{j}", block_in, ch * mult))
            block_in = ch * mult
            if resolution in attn_at:
                parts.append(_vae_attention(f"{enc}.down.{level}.attn.{j}", block_in))
        if level != levels - 1:
            parts.append(_conv(f"{enc}.down.{level}.downsample.conv", block_in, block_in))
            resolution //= 2
    parts += [
        _vae_middle(f"{enc}.mid", block_in),
        _norm(f"{enc}.norm_out", block_in),
        _conv(f"{enc}.conv_out", moments, block_in),
    ]

    dec = f"{prefix}decoder"
    block_in = ch * mults[-1]
    parts += [_conv(f"{dec}.conv_in", block_in, z_ch), _vae_middle(f"{dec}.mid", block_in)]
    for level in reversed(range(levels)):
        for j in range(n_res + 1):
            parts.append(_vae_resblock(f"{dec}.up.{level}.block.{j}", block_in, ch * mults[level]))
            block_in = ch * mults[level]
            if resolution in attn_at:
                parts.append(_vae_attention(f"{dec}.up.{level}.attn.{j}", block_in))
        if level != 0:
            parts.append(_conv(f"{dec}.up.{level}.upsample.conv", block_in, block_in))
            resolution *= 2
    parts += [_norm(f"{dec}.norm_out", block_in), _conv(f"{dec}.conv_out", ddconfig["out_ch"], block_in)]

    parts += [
        _conv(f"{prefix}quant_conv", 2 * embed_dim, moments, 1),
        _conv(f"{prefix}post_quant_conv", z_ch, embed_dim, 1),
    ]
    return _merge(parts)


def clip_text_shapes(prefix: str = "", size: dict | None = None) -> Shapes:
    """transformers ``CLIPTextModel`` text tower (default: ViT-L/14); ``position_ids`` is not persistent."""
    size = size or CLIP_VIT_L14_TEXT
    hidden, mlp = size["hidden"], size["mlp"]
    parts = [
        {f"{prefix}embeddings.token_embedding.weight": (size["vocab"], hidden)},
        {f"{prefix}embeddings.position_embedding.weight": (size["positions"], hidden)},
        _norm(f"{prefix}final_layer_norm", hidden),
    ]
    for i in range(size["layers"]):
        layer = f"{prefix}encoder.layers.{i}"
        parts += [
            _linear(f"{layer}.self_attn.{name}", hidden, hidden)
            for name in ("q_proj", "k_proj", "v_proj", "out_proj")
        ]
        parts += [
            _norm(f"{layer}.layer_norm1", hidden),
            _norm(f"{layer}.layer_norm2", hidden),
            _linear(f"{layer}.mlp.fc1", mlp, hidden),
            _linear(f"{layer}.mlp.fc2", hidden, mlp),
        ]
    return _merge(parts)


CLIP_POSITION_IDS = TEXT_ENCODER_PREFIX + "embeddings.position_ids"


def _cond_stage_shapes(cond_stage_config, position_ids: bool = False) -> Shapes:
    target = cond_stage_config if isinstance(cond_stage_config, str) else cond_stage_config["target"]
    if target == "__is_unconditional__":
        return {}
    if target.rsplit(".", 1)[-1] == "FrozenCLIPEmbedder":
        version = (cond_stage_config.get("params") or {}).get("version", "openai/clip-vit-large-patch14")
        if version != "openai/clip-vit-large-patch14":
            raise ValueError(f"unknown CLIP text encoder version {version!r}")
        shapes = clip_text_shapes(TEXT_ENCODER_PREFIX)
        if position_ids:  # a persistent buffer in transformers < 4.31
            shapes[CLIP_POSITION_IDS] = (1, CLIP_VIT_L14_TEXT["positions"])
        return shapes
    raise ValueError(f"unsupported cond_stage_config target {target!r}")


def schedule_buffer_shapes(timesteps: int) -> Shapes:
    """The top-level DDPM schedule buffers and ``logvar``, one value per timestep."""
    return {name: (timesteps,) for name in SCHEDULE_BUFFERS}


# ------------------------------------------------------------------------------------ whole model


def expected_checkpoint_shapes(
    yaml_equivalent: dict,
    *,
    placement_rule: str = EVERY_BLOCK,
    appearance_hint_block: bool = True,
    clip_position_ids: bool = False,
) -> Shapes:
    """Every key of the official model's state_dict for this architecture -> its shape.

    The defaults are DiffPortrait3D's; DiffPortrait360 places its motion modules by another
    ``placement_rule``, has no hint block in its appearance net and lists CLIP's ``position_ids``.
    """
    model = yaml_equivalent["model"]["params"]
    unet = model["unet_config"]["params"]
    first_stage = model["first_stage_config"]["params"]
    return _merge(
        [
            schedule_buffer_shapes(model.get("timesteps", 1000)),
            unet_shapes(unet, DIFFUSION_PREFIX),
            motion_module_shapes(unet, DIFFUSION_PREFIX, placement_rule),
            unet_shapes(
                model["appearance_control_stage_config"]["params"],
                APPEARANCE_PREFIX,
                with_out=False,
                with_hint_block=appearance_hint_block,
            ),
            unet_shapes(
                model["pose_control_stage_config"]["params"],
                POSE_PREFIX,
                with_output_blocks=False,
                with_out=False,
                with_hint_block=True,
                with_zero_convs=True,
            ),
            autoencoder_shapes(first_stage["ddconfig"], first_stage["embed_dim"], AUTOENCODER_PREFIX),
            _cond_stage_shapes(model["cond_stage_config"], clip_position_ids),
        ]
    )


def is_buffer_key(key: str) -> bool:
    """True for keys that are buffers, not parameters: schedule tables, motion ``pos_encoder.pe``, CLIP's
    ``position_ids``."""
    return key in SCHEDULE_BUFFERS or key.endswith(".pos_encoder.pe") or key == CLIP_POSITION_IDS
