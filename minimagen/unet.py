"""Imagen's Efficient U-Net (Saharia et al., 2022, Appendix B.1), for the base and super-resolution stages.

The network predicts from a noisy image x_t, its log-SNR, and the frozen T5 text embedding.
Conditioning enters in two ways (as in the paper's "Neural network architecture" section):
  * a vector `cond` = embed(log_snr) + attention-pooled text (+ embed(aug_log_snr) for SR),
    applied in every ResNet block as a FiLM scale-and-shift;
  * cross-attention from image positions to the text tokens at the levels flagged in `cross_attn`.
Classifier-free guidance: a sample whose `cond_drop_mask` is True sees only learned null tokens.

The Efficient U-Net changes, each marked "B.1 (n)" where it is coded:
  (1) more ResNet blocks at lower resolution: a preset choice, `num_resnet_blocks` grows with depth;
  (2) U-Net skip connections scaled by 1/sqrt(2);
  (3) down: downsample BEFORE a level's blocks; up: upsample AFTER them, so every block runs at
      half the resolution the classic DDPM ordering gives it (about 4x fewer FLOPs per block).
`efficient=False` gives the classic ordering without skip scaling, with nearly the same parameters.

Presets (parameters from count_parameters; forward GFLOPs per image measured with FlopCounterMode):
  preset       params, d=128 (tiny T5)  d=512 (t5-small)  GFLOP/image  MFLOP/pixel  blocks run at
  base32       4.77M                    4.87M             0.35         0.34         16, 8, 4 px
  sr64         2.77M                    2.82M             0.53         0.13         32, 16, 8 px
  sr128        4.70M                    4.75M             1.77         0.11         64, 32, 16, 8 px
  paper-base   17.00M                   17.10M            10.75        2.62         64, 32, 16, 8 px (classic)
base32, one AdamW train step at batch 32, 32x32, L=12 tokens, on a shared 2-core CPU: ~250 ms fp32,
~180 ms under bf16 autocast; the same config with efficient=False (same parameters): ~700 ms fp32.
"""
import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from einops import rearrange
from einops.layers.torch import Rearrange
from torch import nn

from minimagen.errors import MinimagenError

NUM_NULL_TOKENS = 4        # learned "no caption" tokens every sample can attend to (see TextConditioning)
SKIP_SCALE = 2 ** -0.5     # B.1 (2)
GROUPS = 8                 # GroupNorm groups; channel counts must be multiples of 8


@dataclass
class UnetConfig:
    dim: int = 64                      # base channels: level i has dim * dim_mults[i] channels
    dim_mults: tuple = (1, 2, 2)       # channels per level = dim * mult; one level per entry, each half the resolution
    num_resnet_blocks: tuple = (1, 2, 3)  # per level: Efficient U-Net puts MORE blocks at LOWER resolution (B.1 (1))
    cross_attn: tuple = (False, True, True)  # per level: cross-attention to text (at the lowest level: to text + image)
    attn_heads: int = 4                # heads of every attention (cross-attention and text pooling)
    attn_dim_head: int = 32            # channels per head
    text_embed_dim: int = 512          # d_model of the text encoder (t5-small 512; the offline tiny T5 128)
    lowres_cond: bool = False          # True for super-resolution stages: `lowres` is concatenated to the input
    efficient: bool = True             # Efficient U-Net ordering + 1/sqrt(2) skip scaling; False = classic DDPM order
    image_size: int = 32               # resolution this U-Net is trained at (checked in forward)


def log_snr_embedding(log_snr, dim):
    """Sinusoidal features of log-SNR. [B] -> [B, dim]
    log-SNR spans about [-20, 20]; scaling by 25 maps that onto DDPM's familiar 1000-step range, so the
    standard frequencies (periods from 2*pi to 2*pi*10^4 units) resolve both fine and coarse noise levels."""
    half = dim // 2
    freqs = torch.exp(-math.log(10_000) * torch.arange(half, device=log_snr.device) / half)  # [half]
    args = 25.0 * log_snr.float()[:, None] * freqs[None]                                   # [B, half]
    return torch.cat([args.sin(), args.cos()], dim=-1)


class NoiseLevelEmbedding(nn.Module):
    """log-SNR -> conditioning vector: sinusoids, then an MLP (used for the diffusion and the SR augmentation level)."""

    def __init__(self, dim, cond_dim):
        super().__init__()
        self.dim = dim
        self.mlp = nn.Sequential(nn.Linear(dim, cond_dim), nn.SiLU(), nn.Linear(cond_dim, cond_dim))

    def forward(self, log_snr):                                    # [B]
        return self.mlp(log_snr_embedding(log_snr, self.dim).to(self.mlp[0].weight.dtype))  # [B, cond_dim]


def attend(q, k, v, mask, heads):
    """Multi-head attention; mask [B, N] True = key may be attended. q [B, M, h*d], k/v [B, N, h*d] -> [B, M, h*d]."""
    q, k, v = (rearrange(t, "b n (h d) -> b h n d", h=heads) for t in (q, k, v))
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :])
    return rearrange(out, "b h n d -> b n (h d)")


class TextConditioning(nn.Module):
    """Text embeddings -> (tokens for cross-attention, pooled vector added to `cond`).

    Learned null tokens are prepended to every caption and are always visible. For a sample whose
    `cond_drop_mask` is True the caption's tokens are hidden, so it sees only the null tokens: that is
    the learned null embedding of classifier-free guidance. Because they are always visible, every
    softmax has at least one valid key, so an all-padding mask can never produce NaN.
    """

    def __init__(self, text_embed_dim, cond_dim, heads):
        super().__init__()
        self.heads = heads
        self.proj = nn.Sequential(nn.LayerNorm(text_embed_dim), nn.Linear(text_embed_dim, cond_dim))
        self.null_tokens = nn.Parameter(torch.randn(NUM_NULL_TOKENS, cond_dim) * 0.02)
        # Imagen adds a pooled text vector to the timestep embedding; attention pooling (one learned
        # query) rather than a mean lets the model pick which words matter and ignores padding exactly.
        self.pool_query = nn.Parameter(torch.randn(1, 1, cond_dim) * 0.02)
        self.pool_kv = nn.Linear(cond_dim, 2 * cond_dim)

    def forward(self, text_embeds, text_mask, cond_drop_mask):     # [B, L, D], [B, L], [B] or None
        B = text_embeds.shape[0]
        tokens = self.proj(text_embeds)                            # [B, L, C]
        null = self.null_tokens.to(tokens.dtype).expand(B, -1, -1)  # [B, K, C]
        tokens = torch.cat([null, tokens], dim=1)                  # [B, K+L, C]
        keep = text_mask if cond_drop_mask is None else text_mask & ~cond_drop_mask.bool()[:, None]
        mask = torch.cat([keep.new_ones(B, NUM_NULL_TOKENS), keep], dim=1)  # [B, K+L]
        k, v = self.pool_kv(tokens).chunk(2, dim=-1)
        pooled = attend(self.pool_query.to(k.dtype).expand(B, -1, -1), k, v, mask, self.heads)  # [B, 1, C]
        return tokens, mask, pooled[:, 0]


class ResnetBlock(nn.Module):
    """GroupNorm-SiLU-conv twice; `cond` enters as FiLM, norm(h) * (1 + scale) + shift, before the second conv."""

    def __init__(self, ch, cond_dim):
        super().__init__()
        self.norm1, self.conv1 = nn.GroupNorm(GROUPS, ch), nn.Conv2d(ch, ch, 3, padding=1)
        self.to_scale_shift = nn.Linear(cond_dim, 2 * ch)
        self.norm2, self.conv2 = nn.GroupNorm(GROUPS, ch), nn.Conv2d(ch, ch, 3, padding=1)
        zero_init(self.conv2)  # the block starts as the identity, so a deep stack trains stably from step one

    def forward(self, x, cond):                                    # [B, C, H, W], [B, cond_dim] (already SiLU'd)
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = rearrange(self.to_scale_shift(cond), "b (two c) -> two b c 1 1", two=2)
        h = self.conv2(F.silu(self.norm2(h) * (1 + scale) + shift))
        return x + h                                               # [B, C, H, W]


class CrossAttention(nn.Module):
    """Image positions attend to the text tokens; with `self_attend` to the text AND image tokens
    concatenated (Imagen's variant, used at the lowest resolution where it is cheap: global context)."""

    def __init__(self, ch, cond_dim, heads, dim_head, self_attend):
        super().__init__()
        inner, self.heads, self.self_attend = heads * dim_head, heads, self_attend
        self.norm = nn.LayerNorm(ch)
        self.to_q, self.to_out = nn.Linear(ch, inner), nn.Linear(inner, ch)
        self.text_to_kv = nn.Linear(cond_dim, 2 * inner)
        self.image_to_kv = nn.Linear(ch, 2 * inner) if self_attend else None
        zero_init(self.to_out)

    def forward(self, x, tokens, mask):                            # [B, C, H, W], [B, N, cond_dim], [B, N]
        H = x.shape[2]
        h = self.norm(rearrange(x, "b c h w -> b (h w) c"))        # [B, HW, C]
        k, v = self.text_to_kv(tokens).chunk(2, dim=-1)            # [B, N, inner] each
        if self.self_attend:
            k_img, v_img = self.image_to_kv(h).chunk(2, dim=-1)    # [B, HW, inner] each
            k, v = torch.cat([k, k_img], 1), torch.cat([v, v_img], 1)
            mask = torch.cat([mask, mask.new_ones(mask.shape[0], h.shape[1])], dim=1)
        out = self.to_out(attend(self.to_q(h), k, v, mask, self.heads))  # [B, HW, C]
        return x + rearrange(out, "b (h w) c -> b c h w", h=H)


class Downsample(nn.Sequential):
    """Halve resolution losslessly: space-to-depth (each 2x2 patch -> 4 channels), then a 1x1 conv.
    Cheaper than a strided 3x3 conv (4 vs 9 MACs per in/out channel pair) and drops no pixel."""

    def __init__(self, ch_in, ch_out):
        super().__init__(Rearrange("b c (h p) (w q) -> b (c p q) h w", p=2, q=2), nn.Conv2d(4 * ch_in, ch_out, 1))


class Upsample(nn.Sequential):
    """Double resolution: a 1x1 conv to 4x channels, then depth-to-space (pixel shuffle). Its four
    sub-pixel filters start equal, so at init it is nearest-neighbour upsampling: no checkerboard."""

    def __init__(self, ch_in, ch_out):
        conv = nn.Conv2d(ch_in, 4 * ch_out, 1)
        with torch.no_grad():
            conv.weight.copy_(conv.weight[:ch_out].repeat_interleave(4, dim=0))
            conv.bias.copy_(conv.bias[:ch_out].repeat_interleave(4, dim=0))
        super().__init__(conv, nn.PixelShuffle(2))


class Level(nn.Module):
    """One resolution of one path of the U-Net: its ResNet blocks, then optional attention to the text."""

    def __init__(self, ch, num_blocks, cond_dim, attn, self_attend, c: UnetConfig):
        super().__init__()
        self.blocks = nn.ModuleList(ResnetBlock(ch, cond_dim) for _ in range(num_blocks))
        self.attn = CrossAttention(ch, cond_dim, c.attn_heads, c.attn_dim_head, self_attend) if attn else None

    def forward(self, h, cond, tokens, mask):
        for block in self.blocks:
            h = block(h, cond)
        return self.attn(h, tokens, mask) if self.attn is not None else h


def zero_init(layer):
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)


class Unet(nn.Module):
    def __init__(self, config: UnetConfig):
        super().__init__()
        c = self.config = config
        n = len(c.dim_mults)
        if not (len(c.num_resnet_blocks) == len(c.cross_attn) == n):
            raise MinimagenError("Give dim_mults, num_resnet_blocks and cross_attn one entry per level each.")
        if c.image_size % 2 ** n:
            raise MinimagenError(f"Use an image_size divisible by {2 ** n} (2 ** number of levels).")
        chs = [c.dim * m for m in c.dim_mults]                     # channels per level
        if any(ch % GROUPS for ch in chs):
            raise MinimagenError(f"Use dim * every dim_mult a multiple of {GROUPS} (GroupNorm groups).")
        cond_dim = 4 * c.dim
        self.time_embed = NoiseLevelEmbedding(c.dim, cond_dim)
        self.aug_embed = NoiseLevelEmbedding(c.dim, cond_dim) if c.lowres_cond else None
        self.text = TextConditioning(c.text_embed_dim, cond_dim, c.attn_heads)
        self.stem = nn.Conv2d(6 if c.lowres_cond else 3, chs[0], 3, padding=1)  # SR: noisy image ++ upsampled lowres

        def level(i):
            return Level(chs[i], c.num_resnet_blocks[i], cond_dim, c.cross_attn[i], i == n - 1, c)
        self.downs = nn.ModuleList(level(i) for i in range(n))
        self.ups = nn.ModuleList(level(i) for i in range(n))
        # B.1 (3): efficient resamples at every level (level i's input width chs[i-1] <-> chs[i]);
        # classic resamples only between levels (chs[i] <-> chs[i+1]). Same widths, so nearly the same parameters.
        pairs = list(zip([chs[0]] + chs[:-1], chs)) if c.efficient else list(zip(chs[:-1], chs[1:]))
        self.downsamples = nn.ModuleList(Downsample(a, b) for a, b in pairs)
        self.upsamples = nn.ModuleList(Upsample(b, a) for a, b in pairs)
        self.out = nn.Sequential(nn.GroupNorm(GROUPS, chs[0]), nn.SiLU(), nn.Conv2d(chs[0], 3, 3, padding=1))
        zero_init(self.out[-1])  # predict 0 at init: the loss starts at its trivial value instead of exploding
        self.skip_scale = SKIP_SCALE if c.efficient else 1.0      # B.1 (2)

    def forward(self, x, log_snr, text_embeds, text_mask, lowres=None, aug_log_snr=None, cond_drop_mask=None):
        """x [B,3,H,W] noisy image; log_snr [B]; text_embeds [B,L,D]; text_mask [B,L] bool (True = real token);
        lowres [B,3,H,W] upsampled, noise-augmented low-res image and aug_log_snr [B] its augmentation
        log-SNR (SR stages only); cond_drop_mask [B] bool, True = use the null text. Returns [B,3,H,W]."""
        self._check(x, text_embeds, text_mask, lowres, aug_log_snr)
        B = x.shape[0]
        log_snr = log_snr.expand(B) if log_snr.dim() == 0 else log_snr
        tokens, mask, pooled = self.text(text_embeds, text_mask.bool(), cond_drop_mask)  # [B,N,C], [B,N], [B,C]
        cond = self.time_embed(log_snr) + pooled                   # [B, cond_dim]
        if self.aug_embed is not None:
            cond = cond + self.aug_embed(aug_log_snr.expand(B) if aug_log_snr.dim() == 0 else aug_log_snr)
            x = torch.cat([x, lowres.to(x.dtype)], dim=1)          # [B, 6, H, W]
        cond = F.silu(cond)                                        # every FiLM layer reads SiLU(cond); do it once

        h = stem = self.stem(x)                                    # [B, chs[0], H, W]
        eff, n, skips = self.config.efficient, len(self.downs), []
        for i, level in enumerate(self.downs):
            if eff:                                                # B.1 (3): downsample, then blocks
                h = self.downsamples[i](h)
            h = level(h, cond, tokens, mask)                       # [B, chs[i], H_i, W_i]
            skips.append(h)
            if not eff and i < n - 1:                              # classic: blocks, then downsample
                h = self.downsamples[i](h)
        for i in reversed(range(n)):
            if not eff and i < n - 1:                              # classic: upsample, then blocks
                h = self.upsamples[i](h)
            # B.1 (2): skips are added, not concatenated (the up blocks stay C wide, not 2C), and the sum of
            # two unit-variance signals has variance 2, so 1/sqrt(2) keeps it at 1. (Concatenated, the scale
            # would mostly be undone by the next GroupNorm.) The deepest level's skip would be h itself: skip it.
            if i < n - 1:
                h = (h + skips[i]) * self.skip_scale
            h = self.ups[i](h, cond, tokens, mask)
            if eff:                                                # B.1 (3): blocks, then upsample
                h = self.upsamples[i](h)
        # Full-resolution skip from the stem: in the efficient ordering no block sees full resolution,
        # so this is the only path by which pixel-level detail of x reaches the output.
        return self.out((h + stem) * self.skip_scale)              # [B, 3, H, W]

    def _check(self, x, text_embeds, text_mask, lowres, aug_log_snr):
        c = self.config
        if x.dim() != 4 or x.shape[1] != 3:
            raise MinimagenError(f"Pass x as [batch, 3, H, W] RGB images; got shape {tuple(x.shape)}.")
        if x.shape[-2:] != (c.image_size, c.image_size):
            raise MinimagenError(f"This U-Net works at {c.image_size}x{c.image_size}; resize the input "
                                 f"(got {x.shape[-2]}x{x.shape[-1]}) or use a U-Net built for that size.")
        if text_embeds.shape[-1] != c.text_embed_dim:
            raise MinimagenError(f"The text encoder's embedding size ({text_embeds.shape[-1]}) doesn't match this "
                                 f"U-Net ({c.text_embed_dim}); use the encoder it was trained with.")
        if text_mask.shape != text_embeds.shape[:2]:
            raise MinimagenError("Pass text_mask as [batch, tokens] matching text_embeds' first two dimensions.")
        if c.lowres_cond and (lowres is None or aug_log_snr is None):
            raise MinimagenError("This super-resolution U-Net needs lowres (the low-res image upsampled to the "
                                 "output size) and aug_log_snr; pass both.")
        if c.lowres_cond and lowres.shape != x.shape:
            raise MinimagenError(f"Upsample lowres to x's shape {tuple(x.shape)} before passing it "
                                 f"(got {tuple(lowres.shape)}).")
        if not c.lowres_cond and lowres is not None:
            raise MinimagenError("This is a base U-Net (lowres_cond=False); don't pass lowres.")


PRESETS: dict[str, UnetConfig] = {
    # 32x32 toy base (= the UnetConfig defaults): blocks at 16/8/4 px, cross-attention at 8 and 4 px.
    "base32": UnetConfig(dim=64, dim_mults=(1, 2, 2), num_resnet_blocks=(1, 2, 3), cross_attn=(False, True, True)),
    # 32->64 SR: narrower and shallower per pixel; text only at the lowest level (8x8), as Imagen's SR models.
    "sr64": UnetConfig(dim=32, dim_mults=(1, 2, 4), num_resnet_blocks=(1, 2, 3),
                       cross_attn=(False, False, True), lowres_cond=True, image_size=64),
    # 64->128 SR: one more level so the lowest (8x8) is where attention runs.
    "sr128": UnetConfig(dim=32, dim_mults=(1, 2, 4, 4), num_resnet_blocks=(1, 1, 2, 4),
                        cross_attn=(False, False, False, True), lowres_cond=True, image_size=128),
    # The paper's 64x64 base at dim 64 instead of 512 (shape as imagen-pytorch's BaseUnet64 reads the paper:
    # mults (1, 2, 3, 4), 3 blocks per level, attention at the lower three resolutions). Imagen used the
    # Efficient U-Net only for its SR stages; the base adapts the improved-DDPM U-Net, hence the classic ordering.
    # base32 at half the width (a quarter of the parameters): a size between base32 and tiny32 for short runs.
    "small32": UnetConfig(dim=32, dim_mults=(1, 2, 2), num_resnet_blocks=(1, 2, 3), cross_attn=(False, True, True)),
    # The stage-0 recipe's U-Net (minimagen.train.STAGE_RECIPES[0]): small32 with one ResNet block per level.
    # A fifth of base32's FLOPs per step; it reaches 90% caption alignment in ~20 TFLOP of training, base32 in
    # 48-52 (benchmarks/archive/README.md, "Compute to 90%"), so it trains to a recognisable model fastest on a CPU.
    "quick32": UnetConfig(dim=32, dim_mults=(1, 2, 2), num_resnet_blocks=(1, 1, 1), cross_attn=(False, True, True)),
    # Tiny versions for the tests and the notebooks' quick mode: seconds per hundred steps on a CPU.
    "tiny32": UnetConfig(dim=16, dim_mults=(1, 2), num_resnet_blocks=(1, 1), cross_attn=(False, True), attn_heads=2),
    "tiny-sr64": UnetConfig(dim=16, dim_mults=(1, 2), num_resnet_blocks=(1, 1), cross_attn=(False, True), attn_heads=2,
                            lowres_cond=True, image_size=64),
    "paper-base": UnetConfig(dim=64, dim_mults=(1, 2, 3, 4), num_resnet_blocks=(3, 3, 3, 3),
                             cross_attn=(False, True, True, True), efficient=False, image_size=64),
}


def unet_preset(name: str, text_embed_dim: int) -> UnetConfig:
    """A copy of PRESETS[name] for a text encoder whose embeddings have `text_embed_dim` channels."""
    if name not in PRESETS:
        raise MinimagenError(f"Unknown U-Net preset {name!r}; use one of {sorted(PRESETS)}.")
    return replace(PRESETS[name], text_embed_dim=text_embed_dim)


def count_parameters(module) -> int:
    return sum(p.numel() for p in module.parameters())
