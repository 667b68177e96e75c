"""Exercises: the learner writes a piece of Imagen and one generic check compares it with the package's own
implementation on seeded cases. Each exercise is one row of EXERCISES: the reference, seeded cases, the recipe as a
hint, and the plausible mistakes worth naming (each a wrong function, recognised by giving the same answer).
minimagen.learner runs the check in a notebook (attempt) and keeps a passing answer for the later notebooks (yours).
"""
import math
from dataclasses import dataclass, field
from functools import cache
from typing import Callable

import torch
import torch.nn.functional as F

from . import diffusion as D
from . import imagen as I
from .unet import CrossAttention, ResnetBlock


class ExerciseError(AssertionError):
    """A check found a wrong answer; the message says where and what to look at."""


@dataclass
class Exercise:
    notebook: str                   # where it is taught
    reference: Callable             # what the answer must equal (the package's own code where it has it)
    cases: Callable[[], list]       # fresh seeded argument tuples (fresh: generators and modules are not shared)
    hint: str                       # the recipe, said when no named mistake matches
    mistakes: dict = field(default_factory=dict)  # hint -> a plausible wrong answer (same signature)
    call: Callable = None           # how one case runs a function (default f(*args)), e.g. under a seeded RNG
    tol: float = 1e-4


def _close(a, b, tol) -> bool:
    """a equals b: tensors (shape, bool-ness, values), numbers, and dicts/lists/tuples of them."""
    if torch.is_tensor(b):
        if not torch.is_tensor(a) or a.shape != b.shape or (b.dtype == torch.bool) != (a.dtype == torch.bool):
            return False
        return torch.allclose(a.detach().double().cpu(), b.detach().double(), atol=tol, rtol=tol, equal_nan=True)
    if isinstance(b, dict):
        return isinstance(a, dict) and set(a) == set(b) and all(_close(a[k], b[k], tol) for k in b)
    if isinstance(b, (list, tuple)):
        return isinstance(a, (list, tuple)) and len(a) == len(b) and all(_close(u, v, tol) for u, v in zip(a, b))
    if isinstance(b, (int, float)) and not isinstance(b, bool):
        try:
            a = float(a)
        except (TypeError, ValueError):
            return False
        return abs(a - b) <= (tol * max(1.0, abs(b)) if isinstance(b, float) else 0)
    return type(a) is type(b) and a == b


def _show(v) -> str:
    if torch.is_tensor(v):
        return f"a tensor of shape {tuple(v.shape)}" if v.numel() > 4 else f"{[round(x, 4) for x in v.flatten().tolist()]}"
    if isinstance(v, float):
        return f"{v:.4g}"
    return f"{type(v).__name__} of {len(v)}" if isinstance(v, (list, tuple, dict)) and len(str(v)) > 60 else repr(v)


def _differ(got, want) -> str:
    if torch.is_tensor(got) and torch.is_tensor(want) and got.shape == want.shape:
        return f"your result differs by up to {(got.detach().double().cpu() - want.double()).abs().max().item():.3g}"
    return f"you give {_show(got)}, expected {_show(want)}"


def check(name: str, fn) -> None:
    """Raise ExerciseError unless fn gives the reference's answer on every case; name a known mistake if it is one."""
    ex = EXERCISES[name]
    run = ex.call or (lambda f, args: f(*args))
    for i, (args, fresh) in enumerate(zip(ex.cases(), ex.cases())):  # fresh: generators are not shared
        got, want = run(fn, args), run(ex.reference, fresh)
        if _close(got, want, ex.tol):
            continue
        hint = ex.hint
        for mistake, wrong in ex.mistakes.items():
            try:
                if _close(got, run(wrong, ex.cases()[i]), ex.tol):
                    hint = mistake
                    break
            except Exception:
                pass
        where = ", ".join(repr(a) for a in args if isinstance(a, (str, int, float, tuple)) and len(repr(a)) < 30)
        raise ExerciseError(f"case {i + 1}{f' ({where})' if where else ''}: {_differ(got, want)}; {hint}.")


# The rows. Shared seeded inputs first. ---------------------------------------------------------------------
def _randn(seed, *shape):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


LAMS = torch.tensor([6.0, 1.5, -0.5, -4.0])  # one log-SNR per sample, from clean to very noisy


def _as(lam, x):
    return [D._bcast(v, x) for v in D.alpha_sigma(lam)]


def toy_network(x_t, log_snr):
    """A fixed stand-in for the U-Net: its x0-hat leaves [-1, 1]."""
    return -1.5 * torch.tanh(x_t) + 0.05 * D._bcast(log_snr, x_t).tanh()


def pad_and_mask(id_lists, pad_id=0):
    """-> ids [B, L] right-padded with pad_id, mask [B, L] bool (True on real tokens)."""
    L = max(len(ids) for ids in id_lists)
    ids, mask = torch.full((len(id_lists), L), pad_id), torch.zeros(len(id_lists), L, dtype=torch.bool)
    for i, row in enumerate(id_lists):
        ids[i, :len(row)], mask[i, :len(row)] = torch.tensor(row), True
    return ids, mask


def padding_share(query, real_keys, n_pad):
    """The softmax weight n_pad zero keys take from a query without a mask: each scores 0, weight e^0 = 1."""
    return n_pad / (n_pad + (real_keys @ query / query.shape[-1] ** 0.5).exp().sum().item())


def red_circle_alignments():
    """What caption_alignment measures for a real "a large red circle" against notebook 01's four captions."""
    from .data import from_uint8, render
    from .metrics import caption_alignment
    image = from_uint8(render("a large red circle", 32, seed=0))[None]
    return {c: caption_alignment(image, [c]).item() for c in ("a large red circle", "a small red circle",
                                                                "a large blue circle", "a red circle above a blue square")}


def reference_loss(model_fn, objective, x0, log_snr, noise):
    """stage_loss for given t and noise: MSE between model_fn(x_t, log_snr) and the objective's target."""
    return F.mse_loss(model_fn(D.q_sample(x0, log_snr, noise), log_snr), D.training_target(objective, x0, noise, log_snr))


def reference_sample(model_fn, shape, steps, step, seed=0, thresholding="dynamic", callback=None, objective="v",
                     schedule="cosine", device="cpu"):
    """sample_loop with the step passed in, in notebook 04's signature: step(x_t, x0, lam_t, lam_s, randn) -> x_s."""
    return D.sample_loop(model_fn, shape, steps, objective=objective, thresholding=thresholding, schedule=schedule,
                         generator=torch.Generator().manual_seed(seed), device=device, callback=callback, step=step)


def ddim_step(x_t, x0, lam_t, lam_s, randn):
    return D.ddim_step(x_t, x0, lam_t, lam_s, 0.0)


def ddpm_step(x_t, x0, lam_t, lam_s, randn):
    return D.ddpm_step(x_t, x0, lam_t, lam_s, randn())


def _sample_cases():
    shape = (2, 3, 4, 4)
    return [(toy_network, shape, n, step, 0, th, None, obj) for n, step, th, obj in (
        (1, ddim_step, "none", "v"), (4, ddim_step, "none", "v"), (4, ddim_step, "none", "eps"),
        (4, ddim_step, "dynamic", "v"), (4, ddim_step, "static", "v"), (4, ddpm_step, "dynamic", "v"))]


def _with_callback(f, args):  # the images, and every callback(i, lam_t, x, x0_raw, x0) call
    calls = []
    return f(*args[:6], lambda *a: calls.append(a), *args[7:]), calls


def guided_x0(model_fn, x_t, log_snr, w, method="dynamic", objective="v"):
    """The x0-hat one sampling step uses [Imagen Sec. 2.2-2.3]: guide the predictions, convert, then threshold."""
    pred = D.classifier_free_guidance(model_fn(x_t, log_snr, True), model_fn(x_t, log_snr, False), w)
    return D.threshold(D.prediction_to_x0(objective, pred, x_t, log_snr), method)  # AFTER guidance


def _guided_cases():
    a, b = _randn(7, 2, 3, 8, 8)
    model_fn = lambda x, lam, text: torch.tanh(x + (0.6 * a if text else -0.3 * b)) * (0.5 + torch.sigmoid(
        lam).view(-1, 1, 1, 1)) + (0.4 * b if text else 0.0)
    return [(model_fn, _randn(0, 4, 3, 8, 8), torch.tensor([-3.0, -1.0, 0.5, 2.0]), w, m, o) for o in ("v", "eps")
            for w, m in ((1.0, "none"), (0.0, "none"), (7.5, "none"), (7.5, "static"), (7.5, "dynamic"))]


def _randomised(module, seed):
    """Seeded random weights everywhere (the package zero-initialises last layers, which hides mistakes)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (p[0].numel() ** -0.5 if p.dim() > 1 else 0.5))
    return module.eval()


def _film(block, x, cond, film=lambda n, scale, shift: n * (1 + scale) + shift, residual=True):
    scale, shift = block.to_scale_shift(cond)[:, :, None, None].chunk(2, dim=1)
    h = block.conv2(F.silu(film(block.norm2(block.conv1(F.silu(block.norm1(x)))), scale, shift)))
    return x + h if residual else h


def cross_attention_by_hand(layer, x, tokens, mask, masked=True, axis=-1, scaled=True, residual=True):
    """CrossAttention(self_attend=False).forward written out, with switches for the mistakes worth naming."""
    B, C, H, W = x.shape
    q, (k, v) = layer.to_q(layer.norm(x.flatten(2).transpose(1, 2))), layer.text_to_kv(tokens).chunk(2, dim=-1)
    q, k, v = (t.view(B, t.shape[1], layer.heads, -1).transpose(1, 2) for t in (q, k, v))  # [B, heads, n, d]
    scores = q @ k.transpose(-1, -2) * (q.shape[-1] ** -0.5 if scaled else 1.0)
    scores = scores.masked_fill(~mask[:, None, None, :], float("-inf")) if masked else scores
    out = layer.to_out((scores.softmax(axis) @ v).transpose(1, 2).reshape(B, H * W, -1)).transpose(1, 2)
    return out.reshape(B, C, H, W) + (x if residual else 0)


@cache
def _nets():
    """Small U-Nets with every layer randomised: a base stage for the training loss, and an 8 -> 16 px cascade."""
    from .unet import Unet, UnetConfig
    torch.manual_seed(0)
    small = dict(dim=8, num_resnet_blocks=(1, 1), cross_attn=(False, True), attn_heads=1, attn_dim_head=8,
                 text_embed_dim=8, dim_mults=(1, 2))
    one_level = {**small, "dim_mults": (1,), "num_resnet_blocks": (1,), "cross_attn": (True,)}
    return dict(loss=_randomised(Unet(UnetConfig(**small, image_size=8)), 0),
                cascade=I.Imagen([_randomised(Unet(UnetConfig(**one_level, image_size=s, lowres_cond=s > 8)), s)
                                  for s in (8, 16)], _ToyText()))


class _ToyText:
    name, dim = "toy", 8

    def encode(self, captions):
        return torch.ones(len(captions), 5, 8), torch.ones(len(captions), 5, dtype=torch.bool)


def base_loss(unet, images, text_embeds, text_mask, objective="v", cond_drop_prob=0.1):
    """stage_loss at the base stage. Its random draws, in this order: t, eps, then drop = torch.rand(B) < p."""
    return I.stage_loss(unet, images, text_embeds, text_mask, None, objective, "cosine", cond_drop_prob)


def _seeded(f, args):  # replays the same random draws for every candidate; the loss must keep its gradient
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        out = f(*args)
    return out, bool(getattr(out, "requires_grad", False))


def ema_avg(ema_param, param, n, decay):
    """train.ema_avg: the EMA with warm-up, decay_n = min(decay, (1 + n) / (10 + n))."""
    from .train import ema_avg as package_ema
    return package_ema(decay)(ema_param, param, n)


def cascade(model, captions, guidance_scale=3.0, steps=10, seed=0, aug_level=0.0):
    """Imagen.sample(..., return_all_stages=True) written out [Imagen Sec. 2.5, Fig. A.4]: the base stage from noise,
    then each SR stage from the stage before, upsampled and noise-augmented at aug_level, every stage guided by the same
    text embeddings. -> [every stage's images]."""
    dev, g = model.device, torch.Generator().manual_seed(seed)
    embeds, mask = (t.to(dev) for t in model.text_encoder.encode(captions))
    B, images, outputs = embeds.shape[0], None, []
    for k, unet in enumerate(model.unets):
        size, lowres, aug_log_snr = model.image_sizes[k], None, None
        if k > 0:  # an SR stage: its input is the stage below, corrupted as in training
            lowres, aug_log_snr = I.upsample_and_augment(images, size, torch.full((B,), aug_level, device=dev),
                                                          model.schedule, g)
        model_fn = model.guided_model_fn(unet, embeds, mask, guidance_scale, lowres, aug_log_snr)
        images = D.sample_loop(model_fn, (B, 3, size, size), steps, "ddim", model.objective, "dynamic",
                               schedule=model.schedule, generator=g, device=dev).clamp(-1, 1)
        outputs.append(images)
    return outputs


def _heun_cases():
    x = _randn(9, 2, 3, 4, 4) * 5
    denoiser = lambda x, sigma: torch.tanh(x / (1 + sigma)) * 0.8  # a fixed stand-in for D(x~; sigma)
    return [(denoiser, x, s, s_next) for s, s_next in ((80.0, 20.0), (2.0, 1.2), (0.5, 0.05))]


def _x0_noise():
    return _randn(3, 4, 3, 5, 5).clamp(-1, 1), _randn(4, 4, 3, 5, 5)


def _steps(seed):
    x0, x_t, z = _randn(seed, 3, 4, 3, 5, 5)
    return x0, x_t, z, torch.tensor([-5.0, -1.0, 0.5, 3.0]), torch.tensor([-4.0, 1.0, 2.0, 8.0])


E = Exercise
EXERCISES = {
    # 01 quick start
    "guidance": E("01", D.classifier_free_guidance, lambda: [(*_randn(1, 2, 2, 3, 4, 4), w) for w in (0.0, 1.0, 3.0)],
                  "eps_uncond + w (eps_cond - eps_uncond): w = 0 gives eps_uncond, w = 1 eps_cond",
                  {"w multiplies the difference added to the UNconditional prediction": lambda c, u, w: c + w * (c - u)}),
    "alignment_predictions": E("01", red_circle_alignments, lambda: [()], "count the attributes the detector checks "
                               "(colour, shape, size, one object; two colours, shapes, the relation, two objects) and "
                               "how many the red circle satisfies", tol=1e-3),
    # 02 text encoder
    "pad_and_mask": E("02", pad_and_mask, lambda: [([[3, 12, 5, 1], [3, 88, 14, 4, 1], [9] * 9, [1]], p) for p in (0, 7)],
                      "pad each list on the right with pad_id to the longest length; the mask is bool, True on real tokens",
                      {"pad with the pad_id argument, not a fixed 0": lambda ids, p: pad_and_mask(ids, 0)}),
    "padding_share": E("02", padding_share, lambda: [(_randn(3, 16), _randn(4, 4, 16), n) for n in (0, 3, 20)],
                       "each zero key scores 0 and takes e^0 / Z, with Z the sum of e^s over all keys, pads included",
                       {"Z must also hold the zero keys' own e^0 = 1 each": lambda q, k, n: n / (k @ q / 4).exp().sum().item(),
                        "scale the scores by 1/sqrt(d)": lambda q, k, n: n / (n + (k @ q).exp().sum().item())}),
    # 03 forward diffusion
    "q_sample": E("03", D.q_sample, lambda: [(_x0_noise()[0], LAMS, _x0_noise()[1])],
                  "x_t = alpha x0 + sigma eps, alpha, sigma = D.alpha_sigma(log_snr) reshaped to [B, 1, 1, 1]",
                  {"alpha^2 = sigmoid(lambda): take the square root": lambda x, l, n: D._bcast(torch.sigmoid(l), x) * x
                   + D._bcast(torch.sigmoid(-l), x) * n,
                   "alpha multiplies the image and sigma the noise": lambda x, l, n: _as(l, x)[1] * x + _as(l, x)[0] * n}),
    "training_target": E("03", D.training_target, lambda: [(o, *_x0_noise(), LAMS) for o in ("eps", "v")],
                         'the noise itself for "eps"; v = alpha eps - sigma x0 for "v"',
                         {"v = alpha eps - sigma x0: your sign is flipped": lambda o, x, n, l: -D.training_target(o, x, n, l),
                          "alpha multiplies the noise and sigma the image": lambda o, x, n, l: (
                              n if o == "eps" else _as(l, x)[0] * x - _as(l, x)[1] * n)}),
    "loss": E("03", reference_loss, lambda: [(toy_network, o, _x0_noise()[0], LAMS, _x0_noise()[1]) for o in ("eps", "v")],
              "mean((model_fn(x_t, log_snr) - target)^2), x_t from q_sample, target from the objective",
              {"the network sees the noisy x_t, not x0": lambda m, o, x, l, n: F.mse_loss(m(x, l), D.training_target(o, x, n, l)),
               "take the mean of the squared errors, not their sum": lambda m, o, x, l, n: F.mse_loss(
                   m(D.q_sample(x, l, n), l), D.training_target(o, x, n, l), reduction="sum")}),
    "cosine_log_snr": E("03", D.cosine_log_snr, lambda: [(torch.linspace(0, 0.99, 100, dtype=torch.float64),)],
                        "lambda = log(alpha^2 / (1 - alpha^2)), alpha^2 = cos^2(pi/2 (t + s)/(1 + s)), s = 0.008",
                        {"lambda is a log: take the log of alpha^2 / sigma^2": lambda t: D.cosine_log_snr(t).exp()}),
    "eps_from_v": E("03", lambda v, x_t, lam: D.predict_eps_from_x0(x_t, lam, D.predict_x0_from_v(x_t, lam, v)),
                    lambda: [(D.v_target(*_x0_noise(), LAMS), D.q_sample(_x0_noise()[0], LAMS, _x0_noise()[1]), LAMS)],
                    "expand sigma x_t + alpha v with x_t = alpha x0 + sigma eps and v = alpha eps - sigma x0",
                    {"that is x0 (alpha x_t - sigma v); the noise is sigma x_t + alpha v":
                     lambda v, x, l: _as(l, x)[0] * x - _as(l, x)[1] * v}),
    "shifted_log_snr": E("03", lambda t, shift: (D.cosine_log_snr(t) + shift).clamp(D.LOG_SNR_MIN, D.LOG_SNR_MAX),
                         lambda: [(torch.linspace(0, 1, 101, dtype=torch.float64), s) for s in (-1.386, -2.773, 1.0)],
                         "(D.cosine_log_snr(t) + shift).clamp(-20, 20)",
                         {"clamp to [-20, 20] (at t = 1 the cosine schedule already sits at -20)":
                          lambda t, s: D.cosine_log_snr(t) + s}),
    # 04 reverse process
    "sample": E("04", reference_sample, _sample_cases, "for each step predict x0-hat at lams[i], convert "
                "(D.prediction_to_x0), threshold, call callback(i, lam_t, x, x0_raw, x0), then step to lams[i + 1] with "
                "step(x, x0, lam_t, lam_s, randn); the last step returns x0-hat; all noise from one seeded generator",
                call=_with_callback),
    "ddim_step": E("04", ddim_step, lambda: [(*(_steps(7)[i] for i in (1, 0, 3, 4)), lambda: _steps(7)[2])],
                   "x_s = alpha_s x0 + sigma_s eps, eps = (x_t - alpha_t x0) / sigma_t",
                   {"that is x_t again: eps comes from lam_t, x_s is placed with lam_s": lambda x, x0, lt, ls, r: x}),
    "posterior_mean_from_eps": E("04", lambda x_t, eps, lt, ls: D.q_posterior(D.predict_x0_from_eps(x_t, lt, eps), x_t,
                                                                               lt, ls)[0],
                                 lambda: [_steps(5)[1:]], "mu = (alpha_s / alpha_t)(x_t - c sigma_t eps), c = "
                                 "-torch.expm1(lam_t - lam_s)"),
    "one_step_sample": E("04", lambda m, shape, seed=0, objective="v", schedule="cosine", device="cpu": D.sample_loop(
        m, shape, 1, "ddim", objective, "dynamic", schedule=schedule, generator=torch.Generator().manual_seed(seed)),
                         lambda: [(toy_network, (2, 3, 4, 4), 0, o) for o in ("v", "eps")],
                         "x_1 = randn from a generator seeded with seed, one prediction at t = 1, converted to x0-hat "
                         "and dynamically thresholded"),
    "ddim_eta_step": E("04", D.ddim_step, lambda: [(*(_steps(3)[i] for i in (1, 0, 3, 4, 2)), eta) for eta in (0, .5, 1)],
                       "x_s = alpha_s x0 + sqrt(sigma_s^2 - s_eta^2) eps + s_eta z, s_eta = eta sqrt(c) sigma_s"),
    # 05 the U-Net
    "resnet_block": E("05", ResnetBlock.forward, lambda: [(_randomised(ResnetBlock(16, 24), 0), _randn(1, 2, 16, 8, 8),
                                                               _randn(2, 2, 24))],
                      "x -> norm1 -> SiLU -> conv1 -> norm2 -> FiLM -> SiLU -> conv2, plus x",
                      {"FiLM multiplies by (1 + scale), not by scale": lambda b, x, c: _film(b, x, c, lambda n, a, s: n * a + s),
                       "the residual is missing: return x + h": lambda b, x, c: _film(b, x, c, residual=False)}),
    "cross_attention": E("05", CrossAttention.forward, lambda: [(_randomised(
        CrossAttention(16, 24, 2, 8, self_attend=False), 0),
                                                                  _randn(1, 2, 16, 4, 4), _randn(2, 2, 6, 24),
                                                                  torch.arange(6)[None] < torch.tensor([[4], [2]]))],
                         "softmax(q k^T / sqrt(d), padding masked) v per head, then to_out, then add x",
                         {"padding tokens are attended: set their scores to -inf": lambda *a: cross_attention_by_hand(*a, masked=False),
                          "normalise over the keys (the last axis)": lambda *a: cross_attention_by_hand(*a, axis=-2),
                          "divide q k^T by sqrt(dim_head)": lambda *a: cross_attention_by_hand(*a, scaled=False)}),
    # 06 training the base model
    "training_loss": E("06", base_loss, lambda: [(_nets()["loss"], _randn(6, 6, 3, 8, 8).tanh(), _randn(7, 6, 5, 8),
                                                  torch.arange(5)[None] < torch.tensor([[5], [3], [4], [2], [5], [1]]),
                                                  o, p) for o, p in (("v", 0.5), ("eps", 0.5), ("v", 1.0))],
                       "draw t, then eps, then drop = torch.rand(B) < cond_drop_prob; pass drop as the U-Net's "
                       "cond_drop_mask and return loss(model_fn, objective, images, D.cosine_log_snr(t), eps) as a tensor",
                       {"no caption was dropped: pass drop to the U-Net": lambda u, x, e, m, o, p: base_loss(u, x, e, m, o, 0.0)},
                       call=_seeded),
    "ema_avg": E("06", ema_avg, lambda: [(_randn(1, 8), _randn(2, 8), torch.tensor(n), d) for n, d in
                                         ((0, 0.98), (5, 0.98), (5000, 0.999))],
                 "d = min(decay, (1 + n) / (10 + n)); return d * ema_param + (1 - d) * param",
                 {"warm up: decay_n = min(decay, (1 + n) / (10 + n))": lambda e, p, n, d: d * e + (1 - d) * p,
                  "the EMA keeps d of the old average": lambda e, p, n, d: ema_avg(p, e, n, d)}),
    # 07 guidance and thresholding
    "dynamic_threshold": E("07", D.dynamic_threshold, lambda: [(_randn(0, 4, 3, 8, 8) * torch.tensor(
        [0.3, 2.0, 8.0, 40.0]).view(4, 1, 1, 1), p, cap) for p, cap in ((0.995, None), (0.95, 1.5), (0.9, 3.0))],
                           "s = the p-quantile of |x0| per sample, at least 1, at most cap; clip to [-s, s], divide by s",
                           {"s must be at least 1 (a sample in range is only clipped)": lambda x, p, c: (x / torch.quantile(
                               x.abs().flatten(1), p, 1).clamp(max=c or math.inf).view(-1, 1, 1, 1)).clamp(-1, 1)}),
    "guided_x0": E("07", guided_x0, _guided_cases, "model_fn twice (text True, then False), pred_u + w (pred_c - pred_u), "
                   "D.prediction_to_x0, then D.threshold(x0, method)",
                   {"threshold AFTER guidance: guidance is what pushes x0-hat out of range": lambda m, x, l, w, meth, o:
                    D.classifier_free_guidance(*(D.threshold(D.prediction_to_x0(o, m(x, l, t), x, l), meth)
                                                 for t in (True, False)), w)}),
    # 08 super-resolution
    "down_up": E("08", I.down_up, lambda: [(_randn(0, 2, 3, 16, 16).tanh(), 4)],
                 'F.interpolate(mode="bilinear") down with antialias=True, then back up',
                 {"going down, pass antialias=True": lambda x, s: F.interpolate(F.interpolate(
                     x, size=s, mode="bilinear"), size=x.shape[-1], mode="bilinear")}),
    "upsample_and_augment": E("08", I.upsample_and_augment, lambda: [(_randn(0, 4, 3, 8, 8).tanh(), 16, torch.tensor(
        [0.0, 0.2, 0.5, 1.0]), torch.Generator().manual_seed(1))],
                              "upsample, then z = alpha up + sigma eps at the level's log-SNR (level 0 untouched); "
                              "return (z, log_snr)",
                              {"resize first, then add the noise": lambda x, s, lv, generator: (
                                  I.resize(I.noise_augment(x, lv, generator=generator)[0], s), D.cosine_log_snr(lv))},
                              call=lambda f, a: f(*a[:3], generator=a[3])),
    # 09 the full cascade
    "cascade": E("09", cascade, lambda: [(_nets()["cascade"], ["a red circle", "a blue square"], w, 3, 0, a)
                                         for w, a in ((3.0, 0.0), (1.0, 0.3))],
                 "encode the captions once; for each stage k, if k > 0 upsample_and_augment the images below to "
                 "model.image_sizes[k] (one generator, seeded once), then D.sample_loop with that stage's "
                 "model.guided_model_fn, clamp to [-1, 1], and return every stage's images",
                 {"an SR stage's input is the stage below, upsampled and noise-augmented at aug_level": lambda m, c, w, n,
                  seed, a: cascade(m, c, w, n, seed, 0.0)}),
    # 10 beyond the core
    "karras_sigmas": E("10", D.karras_sigmas, lambda: [(n, 0.0125, 80.0, rho) for n, rho in ((16, 7.0), (8, 1.0))],
                       "interpolate between sigma_max^(1/rho) and sigma_min^(1/rho), raise to rho, then append 0"),
    "min_snr_weight": E("10", I.min_snr_weight, lambda: [(torch.linspace(-10, 10, 201), o, g) for o in ("x0", "eps", "v")
                                                         for g in (1.0, 5.0)],
                        "min(SNR, gamma) on the x0 error: divide by SNR for eps, by SNR + 1 for v"),
    "heun_step": E("10", D.heun_step, _heun_cases, "d = (x - D(x, sigma)) / sigma; Euler to sigma_next; the slope "
                   "there; then x + (sigma_next - sigma) times the mean of the two slopes",
                   {"that is Euler's step: correct it with the slope where it lands": lambda den, x, s, sn: x + (sn - s) * (
                       x - den(x, s)) / s}),
}
