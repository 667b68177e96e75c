"""The diffusion core: noise schedule, forward process, parameterisations, posterior, thresholding,
classifier-free guidance and the three samplers (ancestral DDPM, DDIM and Karras's Heun).

Read it next to the papers:
  [DDPM]   Ho et al. 2020, "Denoising Diffusion Probabilistic Models"
  [VDM]    Kingma et al. 2021, "Variational Diffusion Models" (continuous time, log-SNR)
  [DDIM]   Song et al. 2021, "Denoising Diffusion Implicit Models"
  [Imagen] Saharia et al. 2022, Sec. 2.2-2.3 (guidance, static / dynamic thresholding)
  [v]      Salimans & Ho 2022, "Progressive Distillation" (v-parameterisation)
  [EDM]    Karras et al. 2022, "Elucidating the Design Space of Diffusion-Based Generative Models"

Time is continuous, t in [0, 1] (t=0 data, t=1 noise). A schedule is a function t -> log-SNR
lambda(t) = log(alpha^2 / sigma^2) with alpha^2 + sigma^2 = 1 (variance preserving). Because the
model is conditioned on lambda, not on a step index, the number of sampling steps (25, 50, 1000)
is chosen at sample time without retraining. Every function here is a pure function of tensors: the
arguments are checked once where they come in (Imagen.sample, Imagen.loss, inpaint, TrainConfig;
minimagen/checks.py), not at every step of the sampler.
"""
import math
from dataclasses import dataclass

import torch

from .checks import check_choice, check_thresholding

LOG_SNR_MIN, LOG_SNR_MAX = -20.0, 20.0  # alpha(t=1) ~ 4.5e-5: pure noise to float precision


# ---------------------------------------------------------------- schedules: t -> log-SNR
def _as_time(t):
    """A number or a tensor -> a float tensor (float32, or float64 if given)."""
    return t if torch.is_tensor(t) and t.dtype == torch.float64 else torch.as_tensor(t).float()


def cosine_log_snr(t, s: float = 0.008):
    """Cosine schedule [Nichol & Dhariwal 2021]: alpha_bar = cos^2(pi/2 (t+s)/(1+s)),
    so SNR = alpha_bar / (1 - alpha_bar) = 1 / tan^2(.) and lambda = -2 log tan(.)."""
    t = _as_time(t)
    angle = (math.pi / 2 * (t + s) / (1 + s)).clamp(max=math.pi / 2 - 1e-5)  # tan(pi/2) = inf
    return (-2 * torch.log(torch.tan(angle))).clamp(LOG_SNR_MIN, LOG_SNR_MAX)


def linear_log_snr(t):
    """DDPM's linear betas (1e-4 .. 0.02 over 1000 steps) in continuous time [VDM, App. I]:
    alpha_bar = exp(-(1e-4 t + 10 t^2)), so lambda = -log(expm1(1e-4 + 10 t^2))."""
    t = _as_time(t)
    return (-torch.log(torch.expm1(1e-4 + 10 * t**2))).clamp(LOG_SNR_MIN, LOG_SNR_MAX)


SCHEDULES = {"cosine": cosine_log_snr, "linear": linear_log_snr}


def get_schedule(name: str):
    return SCHEDULES[check_choice(name, SCHEDULES, "schedule")]


def _bcast(v, x):
    """Per-sample scalars [B] -> [B, 1, 1, 1] so they broadcast against images [B, C, H, W]."""
    return v.reshape(-1, *([1] * (x.ndim - 1))).to(x.dtype) if torch.is_tensor(v) else v


def alpha_sigma(log_snr):
    """alpha^2 = sigmoid(lambda), sigma^2 = sigmoid(-lambda): alpha^2 + sigma^2 = 1 exactly."""
    return torch.sigmoid(log_snr).sqrt(), torch.sigmoid(-log_snr).sqrt()


# ---------------------------------------------------------------- forward process q(x_t | x_0)
def q_sample(x0, log_snr, noise):
    """x_t = alpha_t x_0 + sigma_t eps,  eps ~ N(0, I)   [DDPM Eq. 4]."""
    alpha, sigma = alpha_sigma(log_snr)
    return _bcast(alpha, x0) * x0 + _bcast(sigma, x0) * noise


# ---------------------------------------------------------------- three parameterisations
def predict_x0_from_eps(x_t, log_snr, eps):
    """x_0 = (x_t - sigma eps) / alpha   [DDPM Eq. 15]."""
    alpha, sigma = alpha_sigma(log_snr)
    return (x_t - _bcast(sigma, x_t) * eps) / _bcast(alpha, x_t)


def predict_eps_from_x0(x_t, log_snr, x0):
    """eps = (x_t - alpha x_0) / sigma."""
    alpha, sigma = alpha_sigma(log_snr)
    return (x_t - _bcast(alpha, x_t) * x0) / _bcast(sigma, x_t)


def v_target(x0, eps, log_snr):
    """v = alpha eps - sigma x_0   [v, Sec. 4]."""
    alpha, sigma = alpha_sigma(log_snr)
    return _bcast(alpha, x0) * eps - _bcast(sigma, x0) * x0


def predict_x0_from_v(x_t, log_snr, v):
    """x_0 = alpha x_t - sigma v  (since alpha^2 + sigma^2 = 1)."""
    alpha, sigma = alpha_sigma(log_snr)
    return _bcast(alpha, x_t) * x_t - _bcast(sigma, x_t) * v


OBJECTIVES = ("eps", "v", "x0")


def training_target(objective: str, x0, eps, log_snr):
    """What the network learns to output for each parameterisation."""
    if objective == "v":
        return v_target(x0, eps, log_snr)
    if objective == "eps":
        return eps
    check_choice(objective, OBJECTIVES, "objective")  # only "x0" is left
    return x0


def prediction_to_x0(objective: str, pred, x_t, log_snr):
    """Turn the network output into a prediction of the clean image x_0."""
    if objective == "eps":
        return predict_x0_from_eps(x_t, log_snr, pred)
    if objective == "v":
        return predict_x0_from_v(x_t, log_snr, pred)
    check_choice(objective, OBJECTIVES, "objective")  # only "x0" is left
    return pred


# ---------------------------------------------------------------- posterior q(x_s | x_t, x_0), s < t
def q_posterior(x0, x_t, log_snr_t, log_snr_s):
    """Mean and variance of q(x_s | x_t, x_0) [DDPM Eq. 6-7, VDM Eq. 56 in log-SNR form].
    With c = 1 - SNR(t)/SNR(s) = -expm1(lambda_t - lambda_s):
        mean = alpha_s (x_t (1 - c) / alpha_t + c x_0),   variance = sigma_s^2 c."""
    alpha_t, _ = alpha_sigma(log_snr_t)
    alpha_s, sigma_s = alpha_sigma(log_snr_s)
    c = _bcast(-torch.expm1(log_snr_t - log_snr_s), x_t)
    mean = _bcast(alpha_s, x_t) * (x_t * (1 - c) / _bcast(alpha_t, x_t) + c * x0)
    return mean, _bcast(sigma_s, x_t) ** 2 * c


# ---------------------------------------------------------------- x_0 thresholding [Imagen Sec. 2.3]
def static_threshold(x0):
    """Static thresholding: clip x_0 to [-1, 1], the range of the training data."""
    return x0.clamp(-1.0, 1.0)


def dynamic_threshold_scale(x0, percentile: float, cap: float | None):
    """s [B] of dynamic thresholding: the percentile of |x_0| over each sample's pixels, at least 1,
    at most `cap` (None: no cap)."""
    flat = x0.detach().reshape(x0.shape[0], -1).abs().float()  # float32, also under bf16
    return torch.quantile(flat, float(percentile), dim=1).clamp(min=1.0, max=cap)


def dynamic_threshold(x0, percentile: float, cap: float | None):
    """Dynamic thresholding [Imagen Sec. 2.3, Fig. A.31 / Algorithm "dynamic thresholding"]:
        s = percentile of |x_0| over each sample's pixels;  s = min(max(s, 1), cap);  x_0 = clip(x_0, -s, s) / s.
    Pixels that guidance pushed past the data range are pulled back *together* (divided by s)
    instead of all being squashed to +-1, so their differences survive; samples already inside
    [-1, 1] are untouched (s = 1). Per sample: one outlier image does not rescale the others.

    The cap is diffusers' `sample_max_value` (DeepFloyd IF: 1.5 at p = 0.95; imagen-pytorch has none).
    Without it, at high guidance the first steps' x_0 reaches |x_0| ~ 15, s ~ 15, and the whole image
    is divided by 15: a grey x_0, from which the next step's prediction is again extrapolated far out,
    divided again... the sampler never recovers (notebook 07 plots s per step). With a cap, pixels
    beyond cap are clipped, the rest divided by at most cap: detail inside [-cap, cap] survives.
    cap = 1 is static clipping; cap = None is the paper's uncapped rule."""
    if x0.numel() == 0:
        return x0  # nothing to rescale (quantile of nothing is undefined)
    s = _bcast(dynamic_threshold_scale(x0, percentile, cap), x0)
    return x0.clamp(-s, s) / s


THRESHOLDING = ("none", "static", "dynamic")


@dataclass(frozen=True)
class Thresholding:
    """One of Imagen's three choices for the predicted x_0, as one value: Thresholding() is the default
    rule, Thresholding("static") clips, Thresholding("dynamic", 0.995, None) is the paper's. Call it on
    an x_0. Wherever a sampler takes `thresholding=`, a method name means that method with the default
    p and cap, and any function x0 -> x0 (a learner's own) works too. Checked once, when it is made."""
    method: str = "dynamic"
    percentile: float = 0.9  # p: which quantile of |x_0| sets s
    cap: float | None = 1.5  # s <= cap (diffusers' sample_max_value); None = uncapped, as in the paper

    def __post_init__(self):
        check_thresholding(self)

    def __call__(self, x0):
        if self.method == "dynamic":
            return dynamic_threshold(x0, self.percentile, self.cap)
        return static_threshold(x0) if self.method == "static" else x0

    @property
    def label(self) -> str:
        """"static", "dynamic p=0.9 cap=1.5", "dynamic p=0.995 uncapped": the name in tables and plots."""
        if self.method != "dynamic":
            return self.method
        return f"dynamic p={self.percentile:g} " + ("uncapped" if self.cap is None else f"cap={self.cap:g}")


def as_thresholding(rule):
    """A method name -> Thresholding(name); a Thresholding or a function x0 -> x0 is used as it is."""
    return rule if callable(rule) else Thresholding(rule)


def threshold(x0, rule="dynamic"):
    """Apply a thresholding rule (a method name, a Thresholding, or a function x0 -> x0) to a predicted x_0."""
    return as_thresholding(rule)(x0)


# The default, chosen by `benchmarks/guidance_thresholding.py select` on the shaded data (benchmarks/README.md): the
# most shading kept at w = 10 and 15 on captions apart from the evaluation set; confirmed, within noise, by
# `benchmarks/contrast_world.py select` in the contrast world, where dynamic thresholding wins (notebook 07).
# diffusers: p = 0.995 uncapped by default; imagen-pytorch p = 0.95 uncapped; MinImagen p = 0.9.
DEFAULT_THRESHOLDING = Thresholding()
IMAGEN_THRESHOLDING = Thresholding("dynamic", 0.995, None)  # the paper's p = 99.5%, no cap (diffusers' default)
IF_THRESHOLDING = Thresholding("dynamic", 0.95, 1.5)  # DeepFloyd IF's


# ---------------------------------------------------------------- classifier-free guidance
def classifier_free_guidance(pred_cond, pred_uncond, guidance_scale: float):
    """eps = eps_uncond + w (eps_cond - eps_uncond)  [Imagen Eq. 2 in the w = 1 + w_paper form;
    Ho & Salimans 2021]. w = 1: plain conditional model; w = 0: unconditional; w > 1: guided.
    Linear in the prediction, so it is the same whether the net predicts eps, v or x_0."""
    return pred_uncond + guidance_scale * (pred_cond - pred_uncond)


# ---------------------------------------------------------------- after Imagen: three other answers to over-saturation
# Each takes the two x_0 predictions (or eps / v) and returns the guided one, as classifier_free_guidance does;
# notebook 07 measures them beside thresholding.
def cfg_rescale(pred_cond, pred_uncond, guidance_scale: float, phi: float = 0.7):
    """CFG-rescale [Lin et al. 2024, "Common Diffusion Noise Schedules and Sample Steps are Flawed", Eq. 15-16]:
    guide, then scale the result back to the conditional prediction's standard deviation (per sample), and mix:
        x_cfg = x_u + w (x_c - x_u);  x_rescaled = x_cfg * std(x_c) / std(x_cfg);  x = phi x_rescaled + (1 - phi) x_cfg."""
    guided = pred_uncond + guidance_scale * (pred_cond - pred_uncond)
    dims = tuple(range(1, guided.ndim))
    rescaled = guided * pred_cond.std(dim=dims, keepdim=True) / guided.std(dim=dims, keepdim=True).clamp(min=1e-12)
    return phi * rescaled + (1 - phi) * guided


def projected_guidance(pred_cond, pred_uncond, guidance_scale: float, eta: float = 0.0):
    """Adaptive projected guidance without its momentum and norm threshold [Sadat et al. 2024, "Eliminating
    Oversaturation and Artifacts of High Guidance Scales in Diffusion Models", Eq. 6-9]: split the guidance update
    d = x_c - x_u into its part parallel to x_c (which mostly raises saturation) and the orthogonal rest (which
    mostly improves the image), and keep eta of the parallel part:  x = x_c + (w - 1) (d_orth + eta d_par).
    eta = 1 is classifier-free guidance exactly. Per sample; meant for x_0 predictions."""
    diff = pred_cond - pred_uncond
    shape = (-1,) + (1,) * (diff.ndim - 1)
    unit = pred_cond / pred_cond.flatten(1).norm(dim=1).clamp(min=1e-12).view(shape)
    parallel = (diff * unit).flatten(1).sum(1).view(shape) * unit
    return pred_cond + (guidance_scale - 1) * (diff - parallel + eta * parallel)


def t_from_log_snr(log_snr, s: float = 0.008):
    """The time t of the cosine schedule at this log-SNR (cosine_log_snr inverted): lambda = -2 log tan(pi/2 (t+s)/(1+s))."""
    return (2 / math.pi * torch.atan(torch.exp(-log_snr / 2)) * (1 + s) - s).clamp(0, 1)


def interval_guidance(pred_cond, pred_uncond, guidance_scale: float, log_snr, t_range=(0.2, 0.8)):
    """Guidance in a limited interval [Kynkäänniemi et al. 2024, "Applying Guidance in a Limited Interval Improves
    Sample and Distribution Quality"]: w at noise levels inside t_range (cosine-schedule time), no guidance (w = 1)
    outside it: not at the first steps, where it throws x_0 far out, nor at the last, where it only sharpens."""
    t = _bcast(t_from_log_snr(log_snr), pred_cond)
    w = torch.where((t > t_range[0]) & (t < t_range[1]), guidance_scale, 1.0)
    return pred_uncond + w * (pred_cond - pred_uncond)


# ---------------------------------------------------------------- samplers
def sampling_log_snrs(steps: int, schedule: str = "cosine", device="cpu"):
    """steps + 1 log-SNR values from t = 1 (noise) to t = 0 (data), equally spaced in t."""
    return get_schedule(schedule)(torch.linspace(1.0, 0.0, int(steps) + 1, device=device))


def ddpm_step(x_t, x0, log_snr_t, log_snr_s, noise):
    """Ancestral step [DDPM Algorithm 2, via Eq. 7]: x_s ~ q(x_s | x_t, x_0 = predicted x_0)."""
    mean, var = q_posterior(x0, x_t, log_snr_t, log_snr_s)
    return mean + var.sqrt() * noise


def ddim_step(x_t, x0, log_snr_t, log_snr_s, noise, eta: float = 0.0):
    """DDIM step [DDIM Eq. 12]: x_s = alpha_s x_0 + sqrt(sigma_s^2 - s_eta^2) eps + s_eta z, with
    s_eta^2 = eta^2 * sigma_s^2/sigma_t^2 * (1 - alpha_t^2/alpha_s^2) = eta^2 * sigma_s^2 * c  (c as in q_posterior)
    eta = 0: deterministic; eta = 1: exactly the ancestral step (same mean and variance).
    eps is recomputed from the (thresholded) x_0 so both stay consistent."""
    alpha_s, sigma_s = alpha_sigma(log_snr_s)
    eps = predict_eps_from_x0(x_t, log_snr_t, x0)
    s_eta = eta * (sigma_s**2 * -torch.expm1(log_snr_t - log_snr_s)).clamp(min=0).sqrt()
    direction = (sigma_s**2 - s_eta**2).clamp(min=0).sqrt()
    return _bcast(alpha_s, x_t) * x0 + _bcast(direction, x_t) * eps + _bcast(s_eta, x_t) * noise


def karras_sigmas(steps: int, sigma_min: float, sigma_max: float, rho: float = 7.0, device="cpu"):
    """steps + 1 noise levels for the Karras sampler, sigma_max down to sigma_min, then 0 [EDM Eq. 5]:
        sigma_i = (sigma_max^(1/rho) + i/(steps-1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho,  sigma_steps = 0.
    Evenly spaced in sigma^(1/rho): rho = 7 puts most steps at low noise, where their errors would show."""
    ramp = torch.linspace(0, 1, int(steps), dtype=torch.float64)  # i / (steps - 1); [0] when steps = 1
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    sigmas = (hi + ramp * (lo - hi)) ** rho
    return torch.cat([sigmas, sigmas.new_zeros(1)]).float().to(device)


def karras_sigma_range(schedule: str = "cosine") -> tuple[float, float]:
    """(sigma_min, sigma_max) for a model trained on this schedule. It only ever saw log-SNRs in
    [schedule(1), schedule(0)]: sigma_min is the cleanest level it knows (cosine: 0.0125). Cosine's t = 1
    is clamped at log-SNR -20, sigma ~2e4, where x~ is pure noise long before: EDM's sigma_max = 80
    already buries data of std 0.5 under 160x more noise, and it keeps x_0 = (x_t - sigma_t eps) / alpha
    from dividing by alpha ~ 5e-5 in float32."""
    ends = get_schedule(schedule)(torch.tensor([0.0, 1.0]))
    return math.exp(-ends[0].item() / 2), min(80.0, math.exp(-ends[1].item() / 2))


def heun_step(denoiser, x, sigma, sigma_next):
    """One step of Heun's 2nd-order method on the probability-flow ODE dx~/dsigma = (x~ - D(x~; sigma)) / sigma
    [EDM Algorithm 1, lines 4-8]: an Euler step, then the average of the slopes at both ends.
    denoiser(x~, sigma) -> D(x~; sigma), the x_0 prediction in the variance-exploding frame."""
    d = (x - denoiser(x, sigma)) / sigma                          # line 4: the slope at sigma_i
    x_euler = x + (sigma_next - sigma) * d                        # line 5: Euler
    d_next = (x_euler - denoiser(x_euler, sigma_next)) / sigma_next  # line 7: the slope where Euler landed
    return x + (sigma_next - sigma) * (d + d_next) / 2            # line 8: trapezoidal correction


def karras_loop(denoise, noise, steps, schedule="cosine", callback=None, step=heun_step):
    """Heun's 2nd-order deterministic sampler [EDM Algorithm 1] for our variance-preserving model.
    NFE = 2 * steps - 1: two model calls per step, one for the last (an Euler step to sigma = 0),
    so compare it with DDIM at 2 * steps - 1 steps for equal work.

    EDM works in the variance-exploding frame x~ = x_0 + sigma eps. Dividing x_t = alpha x_0 + sigma_t eps
    by alpha gives  x~ = x_t / alpha,  sigma = sigma_t / alpha = exp(-log_snr / 2);  back, since
    alpha^2 = 1 / (1 + sigma^2):  x_t = x~ / sqrt(1 + sigma^2),  log_snr = -2 log sigma. The denoiser
    D(x~; sigma) is the thresholded x_0 prediction, and the probability-flow ODE [EDM Eq. 3, sigma(t) = t]
    is  dx~/dsigma = (x~ - D(x~; sigma)) / sigma.
    denoise(x_t, log_snr [B]) -> (x0_raw, x0); noise: [B, C, H, W] ~ N(0, I);
    step(denoiser, x~, sigma, sigma_next) -> x~ at sigma_next (heun_step, or a learner's own in notebook 10)."""
    sigmas = karras_sigmas(steps, *karras_sigma_range(schedule)).tolist()
    B = noise.shape[0]

    def D_(x, sigma, i=None):  # D(x~; sigma) through the VP model
        log_snr = torch.full((B,), -2 * math.log(sigma), device=x.device)
        x_t = x / math.sqrt(1 + sigma**2)
        x0_raw, x0 = denoise(x_t, log_snr)
        if callback is not None and i is not None:
            callback(i, log_snr, x_t, x0_raw, x0)
        return x0

    x = noise * sigmas[0]  # Algorithm 1 line 2: x~_0 ~ N(0, sigma_max^2 I)
    for i in range(steps - 1):  # the callback sees step i's call at sigma_i (its second call is at sigma_i+1)
        x = step(lambda x_, s_, i=i: D_(x_, s_, i if s_ == sigmas[i] else None), x, sigmas[i], sigmas[i + 1])
    return D_(x, sigmas[steps - 1], steps - 1)  # Euler to sigma = 0: x~ + (0 - s)(x~ - D) / s is D itself


SAMPLERS = ("ddim", "ddpm", "karras")


@torch.no_grad()
def sample_loop(model_fn, shape, steps=50, sampler="ddim", objective="eps", thresholding=DEFAULT_THRESHOLDING,
                schedule="cosine", eta=0.0, generator=None, device="cpu", callback=None, step=None):
    """Generate [B, C, H, W] images in [-1, 1] from pure noise.

    model_fn(x_t, log_snr [B]) -> network prediction (already guided: see classifier_free_guidance).
    At every step the predicted x_0 is thresholded (a Thresholding, a method name, or a function x0 -> x0)
    before the step [Imagen Sec. 2.3]. The last step returns that x_0 itself. Noise is drawn on the CPU from
    `generator`, so a seed gives the same noise on every device.
    callback(i, log_snr, x_t, x0_raw, x0) is called at every step (for trajectories and plots).
    step(x_t, x0, log_snr_t, log_snr_s, randn) -> x_s replaces the sampler's step (a learner's own, notebook 04);
    randn() draws its fresh noise, if any.
    sampler "karras": Heun's method on Karras et al.'s sigmas (karras_loop): 2 * steps - 1 model calls,
    deterministic (eta is ignored). No argument is checked here: Imagen.sample checks them once
    (checks.check_sampling_args), and so can you before calling this directly."""
    check_choice(sampler, SAMPLERS, "sampler")  # an unknown name would otherwise run DDIM
    apply_threshold = as_thresholding(thresholding)

    def randn():
        return torch.randn(shape, generator=generator).to(device)

    def denoise(x, log_snr):  # the network's x_0 prediction, raw and thresholded
        x0_raw = prediction_to_x0(objective, model_fn(x, log_snr).float(), x, log_snr)
        return x0_raw, apply_threshold(x0_raw)

    log_snrs = sampling_log_snrs(steps, schedule, device)
    if sampler == "karras":  # steps = sigma intervals, 2 * steps - 1 model calls (see karras_loop)
        return karras_loop(denoise, randn(), steps, schedule, callback)
    if step is None:  # DDPM draws fresh noise at every step; DDIM only with eta > 0
        step = ((lambda x, x0, lt, ls, randn: ddpm_step(x, x0, lt, ls, randn())) if sampler == "ddpm" else
                (lambda x, x0, lt, ls, randn: ddim_step(x, x0, lt, ls, randn() if eta > 0 else 0.0, eta)))
    x = randn()  # x_1 ~ N(0, I)
    for i in range(steps):
        log_snr_t, log_snr_s = log_snrs[i].expand(shape[0]), log_snrs[i + 1].expand(shape[0])
        x0_raw, x0 = denoise(x, log_snr_t)
        if callback is not None:
            callback(i, log_snr_t, x, x0_raw, x0)
        if i == steps - 1:
            return x0
        x = step(x, x0, log_snr_t, log_snr_s, randn)
