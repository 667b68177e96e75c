"""Exercises that cannot be spoiled: the learner's cell holds their function, a check runs it, and the
solution is never executed over it.

    def my_dynamic_threshold(x0, p, cap):
        raise NotImplementedError  # your code here
    attempt("1", my_dynamic_threshold, check_dynamic_threshold, reference=diffusion.dynamic_threshold)

`attempt` runs the check on the learner's function. While it is still the stub (it raises
NotImplementedError), it says so and checks the reference instead, so "Run All" completes and the
learner sees what a passing run prints. A wrong answer fails loudly, with a hint. Each check is a plain
function of the candidate, so tests/test_exercises.py can show that it fails on the stub and on a
plausible wrong answer and passes on the reference. Checks that return the function that passed let later
cells run the learner's code where it works and the reference where it does not.

The sections follow the notebooks (01, 02 and 10, then 03 to 09): each holds the checks of that notebook's
exercises and, where the package has no function of that name, the reference they compare against.
"""
import torch

from . import diffusion as D


class ExerciseError(AssertionError):
    """A check found a wrong answer; the message says what differs and what to look at."""


def attempt(name: str, fn, check, reference):
    """Check the learner's `fn` and return what the notebook runs from here on: the check's result for yours if it
    passes (or `fn` itself, for a check that returns nothing); otherwise the same for the reference. A stub says so in
    one line; a wrong or crashing answer falls back behind a banner with the check's diagnosis. It never raises, so a
    wrong answer never stops Run All: fix yours and rerun from this cell to run the rest on your own code."""
    try:
        result = check(fn)
        print(f"exercise {name}: your answer passes; the notebook runs on it from here on")
        return fn if result is None else result
    except NotImplementedError:
        print(f"exercise {name}: not written yet, so the reference runs in its place; write yours in the cell above "
              "and rerun this one")
    except Exception as e:  # a wrong answer (ExerciseError) or a crash inside it (a shape error, a typo)
        why = str(e) if isinstance(e, ExerciseError) else f"{type(e).__name__}: {e}"
        print(f"{'=' * 80}\nexercise {name}: YOUR FUNCTION FAILED, so the reference runs in its place from here on.\n"
              f"  {why}\n{'=' * 80}")
    result = check(reference)
    return reference if result is None else result


def check_dynamic_threshold(fn) -> None:
    """fn(x0 [B, ...], p, cap) must equal dynamic thresholding with a cap [Imagen Sec. 2.3; diffusers'
    sample_max_value] on samples that are in range, a little out and far out."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 3, 8, 8, generator=g) * torch.tensor([0.3, 2.0, 8.0, 40.0]).view(4, 1, 1, 1)
    for p, cap in [(0.995, None), (0.95, 1.5), (0.9, 3.0)]:
        got, want = fn(x, p, cap), D.dynamic_threshold(x, p, cap)
        if got.shape != want.shape:
            raise ExerciseError(f"p={p}, cap={cap}: shape {tuple(got.shape)}, expected {tuple(want.shape)}; "
                                "keep the input's shape (take the percentile over each sample's flattened values).")
        if torch.allclose(got, want, atol=1e-5):
            continue
        s = torch.quantile(x.abs().flatten(1), p, dim=1)
        hint = ("the first sample is nearly in range: s must be at least 1, so it is only clipped, never stretched"
                if not torch.allclose(got[0], want[0], atol=1e-5) else
                "s must be at most the cap (when cap is not None)" if cap is not None and (s > cap).any() else
                "clip to [-s, s], then divide by s, with s per sample")
        raise ExerciseError(f"p={p}, cap={cap}: your result differs from dynamic thresholding by up to "
                            f"{(got - want).abs().max().item():.3g}; {hint}.")


# 01: the quick start's checks ---------------------------------------------------------------------------
def check_guidance(fn) -> None:
    """fn(eps_cond, eps_uncond, w) must equal classifier-free guidance, eps_uncond + w (eps_cond - eps_uncond)
    [Ho & Salimans 2021; diffusion.classifier_free_guidance], at w = 0, 1 and large w."""
    g = torch.Generator().manual_seed(1)
    cond, uncond = torch.randn(2, 3, 4, 4, generator=g), torch.randn(2, 3, 4, 4, generator=g)
    hints = {0.0: "at w = 0 the result must be the unconditional prediction alone: start from eps_uncond",
             1.0: "at w = 1 the result must be the conditional prediction: add w times (eps_cond - eps_uncond)",
             3.0: "use eps_uncond + w * (eps_cond - eps_uncond), with w multiplying the whole difference"}
    for w, hint in hints.items():
        got, want = fn(cond, uncond, w), D.classifier_free_guidance(cond, uncond, w)
        if tuple(got.shape) != tuple(want.shape) or not torch.allclose(got, want, atol=1e-5):
            raise ExerciseError(f"w = {w:g}: your result differs from the guided prediction; {hint}.")


def red_circle_alignments() -> dict:
    """The measured caption alignment of a real "a large red circle" (render(..., seed=0)) against the four
    captions of exercise 2 in notebook 01: the reference for check_alignment_predictions."""
    from .data import from_uint8, render
    from .metrics import caption_alignment
    image = from_uint8(render("a large red circle", 32, seed=0))[None]  # [1, 3, 32, 32]
    return {c: caption_alignment(image, [c]).item() for c in ("a large red circle", "a small red circle",
                                                                "a large blue circle", "a red circle above a blue square")}


def check_alignment_predictions(fn) -> dict:
    """fn() -> {caption: predicted alignment} must match what caption_alignment measures for the real large red
    circle; returns the measured values."""
    measured, predicted = red_circle_alignments(), fn()
    hints = {"a large red circle": "an image of exactly its caption gets every attribute right",
             "a small red circle": "four attributes are checked (colour, shape, size, one object) and only the size is wrong",
             "a large blue circle": "the detector checks shape and size on the object of the caption's colour; with no "
                                    "blue object only 'exactly one object' can hold",
             "a red circle above a blue square": "six attributes are checked (two colours, two shapes, the relation, two "
                                                 "objects); with no blue square only the red circle's colour and shape hold"}
    for caption, want in measured.items():
        guess = predicted.get(caption) if isinstance(predicted, dict) else None
        if guess is None:
            raise ExerciseError(f"no prediction for {caption!r}: return a dict with a number for each of the four captions.")
        if abs(float(guess) - want) > 1e-3:
            raise ExerciseError(f"{caption!r}: you predicted {float(guess):.2f}; {hints[caption]}.")
    return measured


def running_mean(values, window: int) -> list:
    """Means of every `window` consecutive values: len(values) - window + 1 of them (numpy's 'valid' convolution)."""
    return [sum(values[i:i + window]) / window for i in range(len(values) - window + 1)]


def check_running_mean(fn) -> None:
    """fn(values, window) must give the mean of every `window` consecutive values, first full window first."""
    import numpy as np
    values = [float(v) for v in torch.rand(23, generator=torch.Generator().manual_seed(2))]
    for window in (1, 5, 23):
        got, want = list(fn(values, window)), np.convolve(values, np.ones(window) / window, mode="valid")
        if len(got) != len(want):
            raise ExerciseError(f"window {window}: {len(got)} values, expected {len(want)}; there are "
                                "len(values) - window + 1 full windows: start at the first full one and stop at the last.")
        if not np.allclose(got, want, rtol=1e-9, atol=1e-12):
            raise ExerciseError(f"window {window}: your means differ by up to {np.abs(np.array(got) - want).max():.3g}; "
                                "divide the sum of values[i:i + window] by window, for each start i.")


# 02: the text encoder's checks --------------------------------------------------------------------------
def pad_and_mask(id_lists, pad_id: int = 0):
    """[[ids of caption 1], ...] -> (ids [B, L] long, right-padded with pad_id; mask [B, L] bool, True on real tokens)."""
    L = max(len(ids) for ids in id_lists)
    ids = torch.full((len(id_lists), L), pad_id, dtype=torch.long)
    mask = torch.zeros(len(id_lists), L, dtype=torch.bool)
    for i, row in enumerate(id_lists):
        ids[i, :len(row)], mask[i, :len(row)] = torch.tensor(row, dtype=torch.long), True
    return ids, mask


def check_pad_and_mask(fn) -> None:
    """fn(id_lists, pad_id) must pad on the right with pad_id to the longest list and return a bool mask."""
    id_lists = [[3, 12, 5, 1], [3, 88, 14, 4, 1], [3, 89, 15, 6, 11, 3, 13, 5, 1], [1]]
    for pad_id in (0, 7):
        (ids, mask), (want_ids, want_mask) = fn(id_lists, pad_id), pad_and_mask(id_lists, pad_id)
        if tuple(ids.shape) != tuple(want_ids.shape) or tuple(mask.shape) != tuple(want_mask.shape):
            raise ExerciseError(f"shapes {tuple(ids.shape)} and {tuple(mask.shape)}, expected {tuple(want_ids.shape)} for "
                                "both; pad every list to the longest one's length L.")
        if mask.dtype != torch.bool:
            raise ExerciseError(f"the mask is {mask.dtype}; make it torch.bool (True on real tokens), as attention expects.")
        if not torch.equal(mask, want_mask):
            raise ExerciseError("the mask is True in the wrong places; it must be True on the first len(ids) positions of "
                                "each row (the real tokens, padding goes on the right).")
        if not torch.equal(ids.long(), want_ids):
            raise ExerciseError(f"pad_id={pad_id}: the padded ids differ; copy each list to the start of its row and fill "
                                "the rest with pad_id (not a fixed 0).")


def padding_share(query, real_keys, n_pad: int) -> float:
    """query [d], real_keys [n, d]: the softmax weight that n_pad zero keys take without a mask."""
    real = (real_keys @ query / query.shape[-1] ** 0.5).exp()  # e^{s_j}, s_j = q . k_j / sqrt(d)
    return n_pad / (n_pad + real.sum().item())                 # each zero key scores 0: weight e^0 = 1


def check_padding_share(fn) -> None:
    """fn(query, real_keys, n_pad) must equal the weight the softmax gives the n_pad zero keys."""
    g = torch.Generator().manual_seed(3)
    query, real_keys = torch.randn(16, generator=g), torch.randn(4, 16, generator=g)
    for n_pad in (0, 3, 20):
        keys = torch.cat([real_keys, torch.zeros(n_pad, 16)])
        want = (keys @ query / 16 ** 0.5).softmax(0)[len(real_keys):].sum().item()
        got = float(fn(query, real_keys, n_pad))
        if abs(got - want) > 1e-5:
            real = (real_keys @ query / 16 ** 0.5).exp().sum().item()
            unscaled = (real_keys @ query).exp().sum().item()
            hint = ("no padding takes no attention" if n_pad == 0 else
                    "Z must also hold the zero keys' own e^0 = 1 each: n_pad / (n_pad + sum of e^s_j)"
                    if abs(got - n_pad / real) < 1e-5 else
                    "scale the scores by 1/sqrt(d): s_j = q . k_j / sqrt(d)" if abs(got - n_pad / (n_pad + unscaled)) < 1e-5
                    else "each zero key scores 0, so takes e^0 / Z with Z the sum of e^s over all keys, pads included")
            raise ExerciseError(f"n_pad={n_pad}: you give the padding {got:.4f}, the softmax gives it {want:.4f}; {hint}.")


def t5_encodes(captions, batch_size: int = 32) -> int:
    """How many captions T5 encodes when `captions` are encoded in batches with an empty cache: each distinct one once."""
    return len(set(captions))


def check_t5_encodes(fn) -> None:
    """fn(captions) must count the captions T5 runs on, given TextEncoder's cache (deduplicated across all batches)."""
    captions = [f"caption {i % 7}" for i in range(40)] + ["caption 0", "caption 9"]  # 8 distinct, repeats across batches
    got, want = fn(captions), t5_encodes(captions)
    if got == len(captions):
        raise ExerciseError(f"{got} is every caption; the cache keeps each caption once, so a repeat never reaches T5.")
    if got != want:
        raise ExerciseError(f"{got} captions, expected {want}; the cache lives across batches: count each distinct caption once.")


# 10: beyond the core's checks ---------------------------------------------------------------------------
def check_karras_sigmas(fn) -> None:
    """fn(steps, sigma_min, sigma_max, rho) must equal EDM Eq. 5 (diffusion.karras_sigmas): steps levels from
    sigma_max down to sigma_min, evenly spaced in sigma^(1/rho), then 0."""
    for steps, rho in ((16, 7.0), (8, 1.0), (32, 3.0)):
        got, want = fn(steps, 0.0125, 80.0, rho), D.karras_sigmas(steps, 0.0125, 80.0, rho)
        if tuple(got.shape) != tuple(want.shape):
            raise ExerciseError(f"steps={steps}: {tuple(got.shape)} values, expected {tuple(want.shape)}; give the steps "
                                "levels and then a final sigma = 0.")
        got = got.double()
        if got[0] < got[-2]:
            raise ExerciseError("your levels rise; sampling starts at sigma_max and ends at sigma_min (then 0).")
        if not torch.allclose(got, want.double(), rtol=1e-5, atol=1e-6):
            raise ExerciseError(f"rho={rho:g}: your levels differ from Eq. 5; interpolate linearly between "
                                "sigma_max^(1/rho) and sigma_min^(1/rho), then raise to the power rho.")


def check_min_snr_weight(fn) -> None:
    """fn(log_snr, objective, gamma) must equal imagen.min_snr_weight: min(SNR, gamma) on the x0 error, divided by
    SNR for eps and by SNR + 1 for v."""
    from .imagen import min_snr_weight
    lam = torch.linspace(-10, 10, 201)
    hints = {"x0": "in x0 terms the weight is min(SNR, gamma) with SNR = exp(log_snr)",
             "eps": "the eps error is SNR times the x0 error: divide min(SNR, gamma) by SNR",
             "v": "the v error is (SNR + 1) times the x0 error: divide min(SNR, gamma) by SNR + 1"}
    for objective, hint in hints.items():
        for gamma in (1.0, 5.0):
            got, want = fn(lam, objective, gamma), min_snr_weight(lam, objective, gamma)
            if tuple(got.shape) != tuple(want.shape) or not torch.allclose(got.float(), want, rtol=1e-4, atol=1e-6):
                raise ExerciseError(f"objective {objective!r}, gamma {gamma:g}: your weight differs; {hint}.")


def inpaint_calls(steps: int, resample: int) -> int:
    """The guided network calls of inpaint: every step but the last is done `resample` times, the last once."""
    return (steps - 1) * resample + 1


def check_inpaint_calls(fn) -> None:
    """fn(steps, resample) must count inpaint's network calls."""
    for steps, resample in ((6, 3), (6, 1), (25, 5)):
        got, want = fn(steps, resample), inpaint_calls(steps, resample)
        if got != want:
            hint = ("the last step returns x_0 after one call: it is not resampled" if got == steps * resample else
                    "every step but the last is done resample times")
            raise ExerciseError(f"steps={steps}, resample={resample}: {got} calls, expected {want}; {hint}.")


# §03 forward diffusion: q_sample, the training target and loss, the cosine schedule, eps from v, a shifted schedule --
def _call_per_sample(fn, *args):
    """fn(*args); a shape error becomes a hint: per-sample values [B] must be reshaped to [B, 1, 1, 1]."""
    try:
        return fn(*args)
    except NotImplementedError:
        raise
    except RuntimeError as e:
        raise ExerciseError(f"your function raised {type(e).__name__}: {str(e).splitlines()[0]}; reshape the per-sample "
                            "log-SNR [B] (and alpha, sigma) to [B, 1, 1, 1] so it broadcasts against images "
                            "[B, 3, H, W].") from e


def _first_mistake(got, want, what: str, mistakes: dict, default: str):
    """Raise ExerciseError unless got == want; the hint is the first plausible mistake that got equals."""
    if tuple(got.shape) != tuple(want.shape):
        raise ExerciseError(f"{what}: shape {tuple(got.shape)}, expected {tuple(want.shape)}; keep the images' shape "
                            "(per-sample values [B] reshaped to [B, 1, 1, 1] broadcast against [B, 3, H, W]).")
    if torch.allclose(got.double(), want.double(), atol=1e-5, rtol=1e-5):
        return
    hint = next((h for h, wrong in mistakes.items() if torch.allclose(got.double(), wrong.double(), atol=1e-5, rtol=1e-5)),
                default)
    raise ExerciseError(f"{what}: your result differs by up to {(got.double() - want.double()).abs().max().item():.3g}; "
                        f"{hint}.")


def _forward_inputs():
    """Fixed images x0 [4, 3, 5, 5], noise and one log-SNR per sample (from clean to very noisy)."""
    g = torch.Generator().manual_seed(3)
    x0, noise = torch.rand(4, 3, 5, 5, generator=g) * 2 - 1, torch.randn(4, 3, 5, 5, generator=g)
    return x0, noise, torch.tensor([6.0, 1.5, -0.5, -4.0])


def check_q_sample(fn) -> None:
    """fn(x0 [B, 3, H, W], log_snr [B], noise) must equal x_t = alpha x0 + sigma eps with alpha^2 = sigmoid(lambda),
    sigma^2 = sigmoid(-lambda) [DDPM Eq. 4; diffusion.q_sample]."""
    x0, noise, lam = _forward_inputs()
    got, want = _call_per_sample(fn, x0, lam, noise), D.q_sample(x0, lam, noise)
    a2, s2 = (D._bcast(v, x0) for v in (torch.sigmoid(lam), torch.sigmoid(-lam)))
    a, s = a2.sqrt(), s2.sqrt()
    _first_mistake(got, want, "x_t", {
        "alpha^2 = sigmoid(lambda): take the square root, alpha = sqrt(sigmoid(lambda)) (and sigma likewise)": a2 * x0 + s2 * noise,
        "alpha multiplies the image and sigma the noise, not the other way round": s * x0 + a * noise,
        "sigma^2 = sigmoid(-lambda), with a minus sign (so that alpha^2 + sigma^2 = 1)": a * x0 + a * noise},
        "x_t = alpha * x0 + sigma * noise, with alpha, sigma = D.alpha_sigma(log_snr) reshaped to [B, 1, 1, 1]")


def check_training_target(fn) -> None:
    """fn(objective, x0, noise, log_snr) must be the network's target: the noise for "eps", v = alpha eps - sigma x0
    for "v" [Salimans & Ho 2022, Sec. 4; diffusion.training_target]."""
    x0, noise, lam = _forward_inputs()
    a, s = (D._bcast(v, x0) for v in D.alpha_sigma(lam))
    _first_mistake(_call_per_sample(fn, "eps", x0, noise, lam), noise, 'objective "eps"', {
        'for "eps" the target is the noise itself': x0}, 'for "eps" return the noise eps unchanged')
    _first_mistake(_call_per_sample(fn, "v", x0, noise, lam), D.training_target("v", x0, noise, lam), 'objective "v"', {
        "the sign is flipped: v = alpha * eps - sigma * x0": s * x0 - a * noise,
        "alpha multiplies the noise and sigma the image in v = alpha eps - sigma x0": a * x0 - s * noise,
        "alpha = sqrt(sigmoid(lambda)): use D.alpha_sigma, not sigmoid(lambda) itself":
            D._bcast(torch.sigmoid(lam), x0) * noise - D._bcast(torch.sigmoid(-lam), x0) * x0,
        'v is a mix of the noise and the image; "eps" alone is the other objective': noise},
        "v = alpha * eps - sigma * x0, with alpha, sigma = D.alpha_sigma(log_snr) reshaped to [B, 1, 1, 1]")


def toy_network(x_t, log_snr):
    """A fixed stand-in for the U-Net: any prediction [B, 3, H, W] from x_t and the log-SNR [B]."""
    return torch.tanh(1.5 * x_t) + 0.1 * D._bcast(log_snr, x_t)


def reference_loss(model_fn, objective, x0, log_snr, noise):
    """The denoising loss of imagen.stage_loss for given t and noise: mean squared error between the
    network's prediction on x_t and the target of `objective`."""
    x_t = D.q_sample(x0, log_snr, noise)
    return torch.nn.functional.mse_loss(model_fn(x_t, log_snr), D.training_target(objective, x0, noise, log_snr))


def check_loss(fn) -> None:
    """fn(model_fn, objective, x0, log_snr, noise) -> a scalar must equal the mean squared error between
    model_fn(x_t, log_snr) and the target [DDPM Eq. 14; imagen.stage_loss]."""
    x0, noise, lam = _forward_inputs()
    for objective in ("eps", "v"):
        got = torch.as_tensor(_call_per_sample(fn, toy_network, objective, x0, lam, noise))
        if got.numel() != 1:
            raise ExerciseError(f'objective "{objective}": your loss has shape {tuple(got.shape)}; the loss is one number, '
                                "the mean of the squared errors over all elements.")
        x_t, target = D.q_sample(x0, lam, noise), D.training_target(objective, x0, noise, lam)
        pred = toy_network(x_t, lam)
        _first_mistake(got.reshape(()), reference_loss(toy_network, objective, x0, lam, noise), f'loss for objective "{objective}"', {
            "the network sees the noisy x_t, not the clean x0: call model_fn(x_t, log_snr)": (toy_network(x0, lam) - target).square().mean(),
            "take the mean of the squared errors over all elements, not their sum": (pred - target).square().sum(),
            "square the differences (mean squared error), do not take their absolute value": (pred - target).abs().mean(),
            "compare the prediction with the objective's target (my_target), not with x0": (pred - x0).square().mean()},
            "loss = mean((model_fn(x_t, log_snr) - target)^2) with x_t from q_sample and target from the objective")


def check_cosine_log_snr(fn) -> None:
    """fn(t) on t in [0, 0.99] (float64) must equal the cosine schedule's log-SNR
    [Nichol & Dhariwal 2021; diffusion.cosine_log_snr]."""
    import math
    t, s = torch.linspace(0, 0.99, 100, dtype=torch.float64), 0.008
    got = fn(t)
    angle = math.pi / 2 * (t + s) / (1 + s)
    a2 = torch.cos(angle) ** 2
    _first_mistake(got, D.cosine_log_snr(t), "lambda(t)", {
        "alpha^2 is cos^2: square the cosine before forming alpha^2 / sigma^2":
            torch.log(torch.cos(angle) / (1 - torch.cos(angle))),
        "lambda = log(alpha^2 / sigma^2) with sigma^2 = 1 - alpha^2: divide by sigma^2": torch.log(a2),
        "put the offset s in the angle: pi/2 (t + s) / (1 + s)":
            torch.log(torch.cos(math.pi / 2 * t) ** 2 / (1 - torch.cos(math.pi / 2 * t) ** 2)),
        "lambda is a log: take the log of alpha^2 / sigma^2": a2 / (1 - a2)},
        "lambda = log(alpha^2 / (1 - alpha^2)) with alpha^2 = cos^2(pi/2 (t + s)/(1 + s)) and s = 0.008")


def reference_eps_from_v(v, x_t, log_snr):
    """The noise implied by a v prediction, through the package: x0 from v, then eps from x0."""
    return D.predict_eps_from_x0(x_t, log_snr, D.predict_x0_from_v(x_t, log_snr, v))


def check_eps_from_v(fn) -> None:
    """fn(v, x_t, log_snr [B]) must recover the noise: eps = sigma x_t + alpha v."""
    x0, noise, lam = _forward_inputs()
    x_t, v = D.q_sample(x0, lam, noise), D.v_target(x0, noise, lam)
    a, s = (D._bcast(u, x0) for u in D.alpha_sigma(lam))
    _first_mistake(_call_per_sample(fn, v, x_t, lam), noise, "eps", {
        "sigma multiplies x_t and alpha multiplies v, not the other way round": a * x_t + s * v,
        "add alpha v: sigma x_t + alpha v = (sigma^2 + alpha^2) eps": s * x_t - a * v,
        "that is x0 (alpha x_t - sigma v); the noise is sigma x_t + alpha v": a * x_t - s * v},
        "expand sigma x_t + alpha v with x_t = alpha x0 + sigma eps and v = alpha eps - sigma x0")


def reference_shifted_log_snr(t, shift):
    """The cosine schedule's log-SNR moved by `shift`, clamped to the package's range."""
    return (D.cosine_log_snr(t) + shift).clamp(D.LOG_SNR_MIN, D.LOG_SNR_MAX)


def check_shifted_log_snr(fn):
    """fn(t, shift) must equal the cosine log-SNR plus shift, clamped to [-20, 20] [Hoogeboom et al. 2023].
    Returns fn, so a notebook can plot with the function that passed."""
    import math
    t = torch.linspace(0, 1, 101, dtype=torch.float64)
    for shift in (2 * math.log(32 / 64), 2 * math.log(32 / 128), 1.0):
        _first_mistake(fn(t, shift), reference_shifted_log_snr(t, shift), f"shift {shift:+.2f}", {
            "clamp the shifted log-SNR to [-20, 20] (at t = 1 the cosine schedule already sits at -20)": D.cosine_log_snr(t) + shift,
            "add the shift (a negative shift makes every t noisier)":
                (D.cosine_log_snr(t) - shift).clamp(D.LOG_SNR_MIN, D.LOG_SNR_MAX)},
            "return (D.cosine_log_snr(t) + shift).clamp(-20, 20)")
    return fn


# §04 reverse process: the DDIM step, the sampling loop, the posterior mean in eps form, a 1-step sample, DDIM's eta -----
def _step_inputs(seed: int = 7):
    """Fixed x0-hat, x_t, noise z [4, 3, 5, 5] and one (lambda_t, lambda_s) pair per sample, s less noisy than t."""
    g = torch.Generator().manual_seed(seed)
    x0, x_t, z = (torch.randn(4, 3, 5, 5, generator=g) for _ in range(3))
    return x0, x_t, z, torch.tensor([-5.0, -1.0, 0.5, 3.0]), torch.tensor([-4.0, 1.0, 2.0, 8.0])


def reference_ddim_step(x_t, x0, lam_t, lam_s, randn):
    """diffusion.ddim_step with eta = 0 in notebook 04's step signature (randn is never called)."""
    return D.ddim_step(x_t, x0, lam_t, lam_s, 0.0)


def reference_ddpm_step(x_t, x0, lam_t, lam_s, randn):
    """diffusion.ddpm_step in notebook 04's step signature: one fresh randn() per step."""
    return D.ddpm_step(x_t, x0, lam_t, lam_s, randn())


def check_ddim_step(fn):
    """fn(x_t, x0, lam_t [B], lam_s [B], randn) must equal the deterministic DDIM step
    x_s = alpha_s x0 + sigma_s eps, eps = (x_t - alpha_t x0) / sigma_t [DDIM Eq. 12, eta = 0; diffusion.ddim_step].
    Returns fn."""
    x0, x_t, z, lt, ls = _step_inputs()
    got, want = _call_per_sample(fn, x_t, x0, lt, ls, lambda: z), D.ddim_step(x_t, x0, lt, ls, 0.0)
    a_t, s_t = (D._bcast(v, x_t) for v in D.alpha_sigma(lt))
    a_s, s_s = (D._bcast(v, x_t) for v in D.alpha_sigma(ls))
    _first_mistake(got, want, "x_s", {
        "that is x_t again: eps-hat comes from x_t with alpha_t, sigma_t (lam_t), and x_s is placed with alpha_s, "
        "sigma_s (lam_s)": x_t,
        "DDIM with eta = 0 adds no fresh noise: do not call randn": want + s_s * z,
        "alpha_s multiplies x0-hat and sigma_s multiplies eps-hat, not the other way round":
            s_s * x0 + a_s * (x_t - a_t * x0) / s_t},
        "x_s = alpha_s * x0 + sigma_s * eps with eps = (x_t - alpha_t * x0) / sigma_t (D.predict_eps_from_x0(x_t, lam_t, x0))")
    return fn


def sampling_toy(x_t, log_snr):
    """A fixed stand-in for the guided network: its predictions put x0-hat partly outside [-1, 1]."""
    return -1.5 * torch.tanh(x_t) + 0.05 * D._bcast(log_snr, x_t).tanh()


@torch.no_grad()
def reference_sample(model_fn, shape, steps, step, seed=0, thresholding="dynamic", callback=None, objective="v",
                     schedule="cosine", device="cpu"):
    """diffusion.sample_loop's loop with the step passed in (step(x_t, x0, lam_t, lam_s, randn) -> x_s): notebook
    04's reference for the loop the learner writes."""
    g = torch.Generator().manual_seed(seed)

    def randn():
        return torch.randn(shape, generator=g).to(device)

    lams = D.sampling_log_snrs(steps, schedule, device)
    x = randn()
    for i in range(steps):
        lam_t, lam_s = lams[i].expand(shape[0]), lams[i + 1].expand(shape[0])
        x0_raw = D.prediction_to_x0(objective, model_fn(x, lam_t).float(), x, lam_t)
        x0 = D.threshold(x0_raw, thresholding)
        if callback is not None:
            callback(i, lam_t, x, x0_raw, x0)
        if i == steps - 1:
            return x0
        x = step(x, x0, lam_t, lam_s, randn)


def check_sample(fn):
    """fn(model_fn, shape, steps, step, seed, thresholding, callback, objective, schedule, device) must give
    diffusion.sample_loop's images (same seed, same toy network) for DDIM and DDPM steps, and call callback like it.
    Returns fn, so a notebook can go on with the loop that passed."""
    shape = (2, 3, 4, 4)

    def run(steps, step, thresholding, callback=None, objective="v"):
        out = fn(sampling_toy, shape, steps, step, seed=0, thresholding=thresholding, callback=callback,
                 objective=objective, schedule="cosine", device="cpu")
        return torch.as_tensor(out).cpu()

    def package(steps, sampler, thresholding, callback=None, objective="v"):
        return D.sample_loop(sampling_toy, shape, steps, sampler, objective, thresholding, schedule="cosine",
                             generator=torch.Generator().manual_seed(0), callback=callback)

    cases = [
        (1, "ddim", "none", "v", "with steps = 1: draw x_1 = randn(shape) from torch.Generator().manual_seed(seed), predict "
         "once at lam = D.sampling_log_snrs(steps, schedule)[0] and return x0-hat = D.prediction_to_x0(objective, "
         "model_fn(x_1, lam), x_1, lam): the last step returns x0-hat and does not step"),
        (4, "ddim", "none", "v", "for i in range(steps) step from lam_t = lams[i] to lam_s = lams[i + 1] with "
         "step(x, x0, lam_t, lam_s, randn) (each expanded to [B]), and at i = steps - 1 return x0-hat instead of stepping"),
        (4, "ddim", "none", "eps", "turn the network's output into x0-hat with D.prediction_to_x0(objective, ...): use "
         "the objective argument, not a fixed one"),
        (4, "ddim", "dynamic", "v", "threshold x0-hat with D.threshold(x0_raw, thresholding) and give the thresholded "
         "x0 to the step (and return it at the end)"),
        (4, "ddim", "static", "v", "threshold x0-hat with D.threshold(x0_raw, thresholding), passing the thresholding "
         "argument on"),
        (4, "ddpm", "dynamic", "v", "draw all noise from one generator g = torch.Generator().manual_seed(seed): x_1 first, "
         "then the step's randn() returns the next torch.randn(shape, generator=g)"),
    ]
    for steps, sampler, thresholding, objective, hint in cases:
        step = reference_ddim_step if sampler == "ddim" else reference_ddpm_step
        got, want = run(steps, step, thresholding, objective=objective), package(steps, sampler, thresholding, objective=objective)
        if tuple(got.shape) != shape or not torch.allclose(got, want, atol=1e-5, rtol=1e-5):
            raise ExerciseError(f"{sampler} with the package's step, {steps} step(s), objective {objective!r}, "
                                f"thresholding {thresholding!r}: your images differ from D.sample_loop's; {hint}.")
    mine, theirs = [], []
    run(4, reference_ddim_step, "dynamic", lambda *a: mine.append(a))
    package(4, "ddim", "dynamic", lambda *a: theirs.append(a))
    same = len(mine) == len(theirs) and all(
        len(a) == 5 and a[0] == b[0] and all(torch.allclose(torch.as_tensor(u).cpu().float(), v) for u, v in zip(a[1:], b[1:]))
        for a, b in zip(mine, theirs))
    if not same:
        raise ExerciseError(f"your loop called callback {len(mine)} times (D.sample_loop: {len(theirs)}) or with other "
                            "values; call callback(i, lam_t, x, x0_raw, x0) once per step, after thresholding and "
                            "before stepping.")
    return fn


def reference_posterior_mean_from_eps(x_t, eps, lam_t, lam_s):
    """The posterior mean with x0-hat = (x_t - sigma_t eps) / alpha_t plugged in, through the package."""
    return D.q_posterior(D.predict_x0_from_eps(x_t, lam_t, eps), x_t, lam_t, lam_s)[0]


def check_posterior_mean_from_eps(fn) -> None:
    """fn(x_t, eps, lam_t [B], lam_s [B]) must equal (alpha_s / alpha_t)(x_t - c sigma_t eps), c = 1 - e^(lam_t - lam_s)
    [DDPM Eq. 11 in log-SNR form]."""
    _, x_t, eps, lt, ls = _step_inputs(5)
    a_t, s_t = (D._bcast(v, x_t) for v in D.alpha_sigma(lt))
    a_s, _ = (D._bcast(v, x_t) for v in D.alpha_sigma(ls))
    c = D._bcast(-torch.expm1(lt - ls), x_t)
    _first_mistake(_call_per_sample(fn, x_t, eps, lt, ls), reference_posterior_mean_from_eps(x_t, eps, lt, ls), "mu", {
        "scale the whole bracket by alpha_s / alpha_t": x_t - c * s_t * eps,
        "the ratio is alpha_s / alpha_t (s less noisy, so the ratio is above 1)": a_t / a_s * (x_t - c * s_t * eps),
        "multiply sigma_t eps by c = 1 - exp(lam_t - lam_s) (the posterior's weight on x0-hat)": a_s / a_t * (x_t - s_t * eps)},
        "mu = (alpha_s / alpha_t) * (x_t - c * sigma_t * eps) with c = -torch.expm1(lam_t - lam_s)")


def reference_one_step_sample(model_fn, shape, seed=0, objective="v", schedule="cosine", device="cpu"):
    """diffusion.sample_loop with steps = 1 (DDIM; DDPM gives the same) and the package's dynamic thresholding."""
    return D.sample_loop(model_fn, shape, 1, "ddim", objective, "dynamic", schedule=schedule,
                         generator=torch.Generator().manual_seed(seed), device=device)


def check_one_step_sample(fn):
    """fn(model_fn, shape, seed, objective, schedule, device) must equal sample_loop(steps=1) for a toy network,
    for v and eps objectives. Returns fn."""
    shape = (2, 3, 4, 4)
    for objective in ("v", "eps"):
        got = torch.as_tensor(fn(sampling_toy, shape, seed=0, objective=objective, schedule="cosine", device="cpu")).cpu()
        x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
        lam1, lam0 = (D.cosine_log_snr(torch.full((shape[0],), t)) for t in (1.0, 0.0))
        raw = D.prediction_to_x0(objective, sampling_toy(x, lam1), x, lam1)
        _first_mistake(got, reference_one_step_sample(sampling_toy, shape, 0, objective), f"objective {objective!r}", {
            "threshold x0-hat with dynamic thresholding (D.threshold(x0_raw, 'dynamic')), as every step does": raw,
            "use dynamic thresholding, the sampler's default, not static clipping": D.threshold(raw, "static"),
            "the one prediction is made at t = 1 (pure noise), lam = D.sampling_log_snrs(1, schedule)[0]":
                D.threshold(D.prediction_to_x0(objective, sampling_toy(x, lam0), x, lam0), "dynamic")},
            "draw x_1 = torch.randn(shape, generator=torch.Generator().manual_seed(seed)), predict once at t = 1, "
            "turn the prediction into x0-hat with D.prediction_to_x0(objective, ...) and threshold it")
    return fn


def check_ddim_eta_step(fn):
    """fn(x_t, x0, lam_t [B], lam_s [B], noise, eta) must equal DDIM's general step
    x_s = alpha_s x0 + sqrt(sigma_s^2 - s_eta^2) eps + s_eta z, s_eta^2 = eta^2 c sigma_s^2 [DDIM Eq. 12, 16].
    Returns fn."""
    x0, x_t, z, lt, ls = _step_inputs(3)
    a_s, s_s = (D._bcast(v, x_t) for v in D.alpha_sigma(ls))
    c = D._bcast(-torch.expm1(lt - ls), x_t)
    eps = D.predict_eps_from_x0(x_t, lt, x0)

    def step(s_eta, direction=None):
        return a_s * x0 + ((s_s**2 - s_eta**2).clamp(min=0).sqrt() if direction is None else direction) * eps + s_eta * z

    for eta in (0.0, 0.5, 1.0):
        _first_mistake(_call_per_sample(fn, x_t, x0, lt, ls, z, eta), D.ddim_step(x_t, x0, lt, ls, z, eta), f"eta = {eta:g}", {
            "s_eta^2 = eta^2 c sigma_s^2: include c = 1 - exp(lam_t - lam_s)": step(eta * s_s),
            "the direction's coefficient is sqrt(sigma_s^2 - s_eta^2): the fresh noise replaces part of sigma_s":
                step(eta * c.sqrt() * s_s, s_s),
            "s_eta = eta sqrt(c) sigma_s: eta multiplies the standard deviation, not the variance":
                step((eta * c).sqrt() * s_s)},
            "x_s = alpha_s x0 + sqrt(sigma_s^2 - s_eta^2) eps + s_eta z with eps = D.predict_eps_from_x0(x_t, lam_t, x0) "
            "and s_eta = eta * sqrt(c) * sigma_s")
    return fn


# §05 the U-Net: a FiLM ResNet block, text cross-attention, a level's parameters, the skip scaling --------------
def _randomised(module, seed: int):
    """Seeded random values for every parameter of `module`: the package zero-initialises the last layer of each
    block (it starts as the identity), which would hide a forgotten residual or a wrong FiLM."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            std = p[0].numel() ** -0.5 if p.dim() > 1 else 0.5
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return module.eval()


def _first_match(got, variants, atol=1e-4):
    """The hint of the first variant `got` equals (NaN where it has NaN), or None."""
    for want, hint in variants:
        if want.shape == got.shape and torch.allclose(got, want, atol=atol, rtol=1e-4, equal_nan=True):
            return hint
    return None


def check_resnet_block(fn):
    """fn(block, x, cond), block a minimagen.unet.ResnetBlock with seeded random weights (its layers norm1, conv1,
    to_scale_shift, norm2, conv2), must equal block(x, cond): x + conv2(SiLU(norm2(h) * (1 + scale) + shift))."""
    import torch.nn.functional as F
    from .unet import ResnetBlock
    ch, cond_dim = 16, 24
    ref = _randomised(ResnetBlock(ch, cond_dim), 0)
    g = torch.Generator().manual_seed(1)
    x, cond = torch.randn(2, ch, 8, 8, generator=g), torch.randn(2, cond_dim, generator=g)
    with torch.no_grad():
        got, want = fn(ref, x, cond), ref(x, cond)
        if got.shape != want.shape:
            raise ExerciseError(f"your block returns shape {tuple(got.shape)}, expected {tuple(want.shape)}; a ResNet "
                                "block keeps the shape of x.")
        if torch.allclose(got, want, atol=1e-4, rtol=1e-4):
            return fn
        scale, shift = ref.to_scale_shift(cond)[:, :, None, None].chunk(2, dim=1)  # [B, C, 1, 1] each
        h1 = ref.conv1(F.silu(ref.norm1(x)))
        n = ref.norm2(h1)

        def block(film_input, residual=True, silu_first=False):
            h = ref.conv2(F.silu(n) * (1 + scale) + shift if silu_first else F.silu(film_input))
            return x + h if residual else h
        hint = _first_match(got, [
            (block(n * scale + shift), "FiLM multiplies by (1 + scale), not by scale: norm2(h) * (1 + scale) + shift, "
                                       "so a zero scale leaves the features as they are"),
            (block(n * (1 + shift) + scale), "scale and shift are swapped: the first half of to_scale_shift(cond)'s "
                                             "channels is the scale, the second half the shift"),
            (block(n * (1 + scale) + shift, residual=False), "the residual is missing: return x + h"),
            (block(None, silu_first=True), "apply FiLM to norm2(h) before the SiLU: SiLU(norm2(h) * (1 + scale) + shift)"),
        ])
    raise ExerciseError(f"your block's output differs from ResnetBlock's by up to {(got - want).abs().max().item():.3g}; "
                        + (hint or "follow x -> norm1 -> SiLU -> conv1 -> norm2 -> FiLM -> SiLU -> conv2, then add x")
                        + ".")


def check_cross_attention(fn):
    """fn(layer, x, tokens, mask), layer a minimagen.unet.CrossAttention(..., self_attend=False) with seeded random
    weights (its layers norm, to_q, text_to_kv, to_out; layer.heads), must equal layer(x, tokens, mask), with padded
    captions (mask False = padding)."""
    from .unet import CrossAttention
    ch, cond_dim, heads, dim_head = 16, 24, 2, 8
    ref = _randomised(CrossAttention(ch, cond_dim, heads, dim_head, self_attend=False), 0)
    g = torch.Generator().manual_seed(1)
    x, tokens = torch.randn(2, ch, 4, 4, generator=g), torch.randn(2, 6, cond_dim, generator=g)
    mask = torch.tensor([[True] * 4 + [False] * 2, [True] * 2 + [False] * 4])  # caption lengths 4 and 2, then padding
    with torch.no_grad():
        got, want = fn(ref, x, tokens, mask), ref(x, tokens, mask)
        if got.shape != want.shape:
            raise ExerciseError(f"your layer returns shape {tuple(got.shape)}, expected {tuple(want.shape)}; reshape the "
                                "[B, H*W, C] result back to [B, C, H, W] and add it to x.")
        if torch.allclose(got, want, atol=1e-4, rtol=1e-4):
            return fn
        variants = [(cross_attention_by_hand(ref, x, tokens, mask, use_mask=False),
                     "padding tokens are attended: set the scores of keys where mask is False to -inf before the softmax")]
        for fill in (float("-inf"), -1e9):
            variants.append((cross_attention_by_hand(ref, x, tokens, mask, softmax_dim=-2, fill=fill),
                             "the softmax runs over the wrong axis: normalise over the keys (the text tokens, the last "
                             "axis of q @ k^T), so each image position's weights sum to 1"))
        variants += [
            (cross_attention_by_hand(ref, x, tokens, mask, scaled=False),
             "the scores are not scaled: divide q @ k^T by sqrt(dim_head) (the width of one head)"),
            (cross_attention_by_hand(ref, x, tokens, mask, residual=False), "the residual is missing: return x + out"),
            (cross_attention_by_hand(ref, x, tokens, mask, split_heads=False),
             f"the heads are not split: reshape q, k, v [B, n, heads * dim_head] to [B, heads, n, dim_head] and "
             "attend per head"),
        ]
        hint = _first_match(got, variants)
    if torch.isnan(got).any() and hint is None:
        hint = "your output has NaN: a softmax row with every key masked, check the mask's shape and which axis it masks"
    raise ExerciseError(f"your layer's output differs from CrossAttention's by up to "
                        f"{(got - want).nan_to_num(1e9).abs().max().item():.3g}; "
                        + (hint or "follow softmax(q k^T / sqrt(d), padding masked) v per head, then to_out, then add x")
                        + ".")


def cross_attention_by_hand(layer, x, tokens, mask, use_mask=True, softmax_dim=-1, scaled=True, split_heads=True,
                            residual=True, fill=float("-inf")):
    """CrossAttention(self_attend=False)'s forward written out, with switches for the mistakes check_cross_attention
    names. x [B, C, H, W], tokens [B, N, cond_dim], mask [B, N] (True = real token) -> [B, C, H, W]."""
    B, C, H, W = x.shape
    h = layer.norm(x.flatten(2).transpose(1, 2))                 # [B, HW, C]
    q, (k, v) = layer.to_q(h), layer.text_to_kv(tokens).chunk(2, dim=-1)  # [B, HW, inner], [B, N, inner] x 2
    heads = layer.heads if split_heads else 1
    q, k, v = (t.view(B, t.shape[1], heads, -1).transpose(1, 2) for t in (q, k, v))  # [B, heads, n, d]
    scores = q @ k.transpose(-1, -2)                             # [B, heads, HW, N]
    if scaled:
        scores = scores * (layer.to_q.out_features // layer.heads) ** -0.5
    if use_mask:
        scores = scores.masked_fill(~mask[:, None, None, :], fill)
    out = (scores.softmax(dim=softmax_dim) @ v).transpose(1, 2).reshape(B, H * W, -1)  # [B, HW, inner]
    out = layer.to_out(out).transpose(1, 2).reshape(B, C, H, W)
    return x + out if residual else out


def level_parameters(unet, i):
    """Reference for notebook 05: the parameters of level i, its down and up blocks (with attention) and its two
    resamplers."""
    parts = (unet.downs[i], unet.ups[i], unet.downsamples[i], unet.upsamples[i])
    return sum(p.numel() for part in parts for p in part.parameters())


def check_level_parameters(fn):
    """fn(unet, i) must count level i's parameters in base32 and sr64 (each level's four modules)."""
    from .unet import Unet, count_parameters, unet_preset
    for name in ("base32", "sr64"):
        net = Unet(unet_preset(name, 128))
        for i in range(len(net.downs)):
            got, want = fn(net, i), level_parameters(net, i)
            if got == want:
                continue
            blocks = sum(count_parameters(m) for m in (net.downs[i], net.ups[i]))
            down = sum(count_parameters(m) for m in (net.downs[i], net.downsamples[i]))
            hint = ("add the two resamplers, downsamples[i] and upsamples[i]" if got == blocks else
                    "count the up path too, ups[i] and upsamples[i]" if got == down else
                    "count only level i's four modules, not the whole U-Net" if got == count_parameters(net) else
                    "sum p.numel() over the parameters of downs[i], ups[i], downsamples[i] and upsamples[i]")
            raise ExerciseError(f"{name}, level {i}: you count {got:,} parameters, expected {want:,}; {hint}.")
    return fn


def skip_stds(net, inputs):
    """Reference for notebook 05: {skip_scale: [std of the up path right after each skip addition, deepest first,
    the head last]} for skip_scale 1/sqrt(2) and 1; leaves net.skip_scale as it found it."""
    where = list(net.ups)[-2::-1] + [net.out]  # every level but the deepest adds its skip; the stem's comes before out
    result, before = {}, net.skip_scale
    for scale in (2 ** -0.5, 1.0):
        net.skip_scale, stds = scale, []
        hooks = [m.register_forward_pre_hook(lambda m, args: stds.append(args[0].std().item())) for m in where]
        try:
            with torch.no_grad():
                net(*inputs)
        finally:
            for hk in hooks:
                hk.remove()
        result[scale] = stds
    net.skip_scale = before
    return result


def check_skip_stds(fn):
    """fn(net, inputs) must give skip_stds' numbers on a small three-level U-Net with random weights."""
    from .unet import Unet, UnetConfig
    torch.manual_seed(0)
    config = UnetConfig(dim=16, dim_mults=(1, 2, 2), num_resnet_blocks=(1, 1, 1), cross_attn=(False, False, True),
                        attn_heads=2, attn_dim_head=8, text_embed_dim=32)
    net = _randomised(Unet(config), 0)
    g = torch.Generator().manual_seed(1)
    inputs = (torch.randn(4, 3, 32, 32, generator=g), torch.linspace(-5, 5, 4), torch.randn(4, 5, 32, generator=g),
              torch.ones(4, 5, dtype=torch.bool))
    got, want = fn(net, inputs), skip_stds(net, inputs)
    if not isinstance(got, dict) or set(got) != set(want):
        raise ExerciseError("return a dict with the two keys 2 ** -0.5 and 1.0, each holding a list of stds.")
    for scale in want:
        g_, w_ = got[scale], want[scale]
        if len(g_) == len(w_) and all(abs(a - b) <= 1e-4 * max(1.0, abs(b)) for a, b in zip(g_, w_)):
            continue
        hint = (f"there are {len(w_)} additions in a {len(config.dim_mults)}-level U-Net: before ups[i] for every "
                "level but the deepest, and before out" if len(g_) != len(w_) else
                "order them deepest first, the head last" if sorted(g_) == sorted(w_) else
                "set net.skip_scale to each value before its forward pass" if g_ == got[1.0 if scale != 1.0 else 2 ** -0.5] else
                "use forward PRE-hooks on those modules: their input is the sum, right after the addition")
        raise ExerciseError(f"skip_scale {scale:.3g}: you measure {[round(v, 3) for v in g_]}, expected "
                            f"{[round(v, 3) for v in w_]}; {hint}.")
    return fn


# §06 training the base model: the training loss with caption dropout, the DDIM loop, chance, per-pair scores ------
def base_loss(unet, images, text_embeds, text_mask, objective="v", cond_drop_prob=0.1):
    """Reference for notebook 06: the base stage's training loss, minimagen.imagen.stage_loss (cosine schedule, no
    low-res input, uniform weighting). Its random draws, in this order: t = torch.rand(B), eps = torch.randn_like(x0),
    drop = torch.rand(B) < cond_drop_prob."""
    from .imagen import stage_loss
    return stage_loss(unet, images, text_embeds, text_mask, None, objective, "cosine", cond_drop_prob)


def _random_unet(seed: int = 0):
    """A tiny 8 px U-Net whose zero-initialised layers are randomised too, so that every input (the text, the
    dropped captions) changes its output."""
    from .unet import Unet, UnetConfig
    torch.manual_seed(seed)
    net = Unet(UnetConfig(dim=8, dim_mults=(1, 2), num_resnet_blocks=(1, 1), cross_attn=(False, True), attn_heads=1,
                          attn_dim_head=8, text_embed_dim=8, image_size=8))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.2)
    return net


def _loss_variant(unet, x0, embeds, mask, objective, p, drop_mode="mask", target="right", order="t-eps-drop",
                  reduce="mean", time_input="log_snr"):
    """stage_loss's computation with one plausible mistake (names the hints of check_training_loss)."""
    import torch.nn.functional as F
    B = x0.shape[0]
    if order == "t-eps-drop":
        t = torch.rand(B)
        eps = torch.randn_like(x0)
    else:  # the noise drawn before the times
        eps = torch.randn_like(x0)
        t = torch.rand(B)
    u = torch.rand(B)
    drop = {"mask": u < p, "none": torch.zeros(B, dtype=torch.bool), "inverted": u >= p, "zeros": u < p}[drop_mode]
    log_snr = D.cosine_log_snr(t)
    x_t = D.q_sample(x0, log_snr, eps)
    if drop_mode == "zeros":  # a dropped caption as zero embeddings instead of the learned null text
        embeds, drop = embeds * (~drop).float().view(-1, 1, 1), None
    pred = unet(x_t, log_snr if time_input == "log_snr" else t, embeds, mask, None, None, drop)
    alpha, sigma = (a.view(-1, 1, 1, 1) for a in D.alpha_sigma(log_snr))
    want = {"right": D.training_target(objective, x0, eps, log_snr), "neg_v": sigma * x0 - alpha * eps, "x0": x0,
            "eps": eps, "v": alpha * eps - sigma * x0}[target]
    return F.mse_loss(pred, want, reduction=reduce)


def check_training_loss(fn):
    """fn(unet, images, text_embeds, text_mask, objective, cond_drop_prob) must equal stage_loss on a tiny random
    U-Net, given the same random draws (the global RNG seeded alike; draws in stage_loss's order); returns fn."""
    from .errors import MinimagenError
    g = torch.Generator().manual_seed(6)
    B = 6
    x0 = torch.rand(B, 3, 8, 8, generator=g) * 2 - 1
    embeds = torch.randn(B, 5, 8, generator=g)
    mask = torch.arange(5)[None] < torch.tensor([5, 3, 4, 2, 5, 1])[:, None]  # [B, L] captions of different lengths
    with torch.random.fork_rng(devices=[]):
        unet = _random_unet()
        for objective, p, seed in (("v", 0.5, 0), ("eps", 0.5, 1), ("v", 1.0, 2), ("v", 0.1, 3)):
            def run(f, **variant):
                torch.manual_seed(seed)
                return f(unet, x0, embeds, mask, objective, p) if not variant else \
                    _loss_variant(unet, x0, embeds, mask, objective, p, **variant)
            try:
                got = run(fn)
            except NotImplementedError:
                raise
            except (RuntimeError, MinimagenError) as e:
                first = str(e).splitlines()[0][:160]
                hint = ("reshape alpha and sigma [B] to [B, 1, 1, 1] so they broadcast against the images (or use "
                        "D.q_sample and D.training_target, which do)" if "size of tensor" in first or "broadcast" in first
                        else "draw t with torch.rand(B) in [0, 1] and follow the steps in the docstring")
                raise ExerciseError(f"objective {objective!r}: your function raised {type(e).__name__}: {first}; "
                                    f"{hint}.") from None
            if not torch.is_tensor(got) or got.numel() != 1:
                raise ExerciseError(f"you returned {type(got).__name__} {getattr(got, 'shape', '')}; return the loss "
                                    "as one tensor, F.mse_loss(pred, target), not .item() and not per-pixel errors.")
            if not got.requires_grad:
                raise ExerciseError("your loss has no gradient (requires_grad is False): keep it a tensor computed from "
                                    "the U-Net's prediction, with no .item(), .detach() or torch.no_grad().")
            want = run(base_loss)
            if torch.allclose(got.detach().float(), want.detach(), rtol=1e-5, atol=1e-7):
                continue
            same = lambda **v: torch.allclose(got.detach().float(), run(lambda *a: None, **v).detach(), rtol=1e-5,
                                              atol=1e-7)
            hints = [
                (dict(drop_mode="none"), "no caption was dropped: draw drop = torch.rand(B) < cond_drop_prob and pass it "
                                         "to the U-Net as cond_drop_mask, so those rows see only the learned null text"),
                (dict(drop_mode="zeros"), "a dropped caption is not zero embeddings: pass cond_drop_mask=drop to the U-Net, "
                                          "which then shows those rows its learned null tokens"),
                (dict(drop_mode="inverted"), "drop the rows where torch.rand(B) < cond_drop_prob (about 10%), not the others"),
                (dict(target="neg_v"), "v = alpha eps - sigma x0: your target has the opposite sign"),
                (dict(target="x0"), "compare the prediction with the objective's target, "
                                    "D.training_target(objective, x0, eps, log_snr), not with x0"),
                (dict(target="eps" if objective == "v" else "v"),
                 f"the target must follow the objective passed in ({objective!r}): use D.training_target(objective, ...)"),
                (dict(order="eps-t-drop"), "draw in stage_loss's order, t first, then eps, then the drop mask, so the "
                                           "check can replay your draws"),
                (dict(reduce="sum"), "take the mean of the squared error over all elements (F.mse_loss), not the sum"),
                (dict(time_input="t"), "the U-Net is told the log-SNR lambda = D.cosine_log_snr(t), not t itself"),
            ]
            hint = next((h for v, h in hints if same(**v)),
                        "follow the docstring's steps: lambda = D.cosine_log_snr(t), x_t = D.q_sample(x0, lambda, eps), "
                        "pred = unet(x_t, lambda, text_embeds, text_mask, None, None, drop), "
                        "F.mse_loss(pred, D.training_target(objective, x0, eps, lambda))")
            raise ExerciseError(f"objective {objective!r}, cond_drop_prob {p}: your loss is {got.item():.5f}, "
                                f"stage_loss gives {want.item():.5f}; {hint}.")
    return fn


def ddim_sample(model_fn, shape, steps, objective="v", generator=None):
    """Reference for notebook 06: deterministic DDIM [DDIM Eq. 12, eta = 0] from x_1 = torch.randn(shape,
    generator=generator) to x_0, x0-hat dynamically thresholded at every step; the last step returns x0-hat."""
    return D.sample_loop(model_fn, shape, steps, "ddim", objective, "dynamic", generator=generator)


def _ddim_variant(model_fn, x, steps, objective, thresholding="dynamic", convert=True, last="x0"):
    """The DDIM loop from a given x_1, with one plausible mistake (names the hints of check_ddim_sample)."""
    log_snrs = D.sampling_log_snrs(steps)
    B = x.shape[0]
    for i in range(steps):
        lam_t, lam_s = log_snrs[i].expand(B), log_snrs[i + 1].expand(B)
        pred = model_fn(x, lam_t)
        x0 = D.threshold(D.prediction_to_x0(objective, pred, x, lam_t) if convert else pred, thresholding)
        if i == steps - 1 and last == "x0":
            return x0
        x = D.ddim_step(x, x0, lam_t, lam_s, 0.0)
    return x


def check_ddim_sample(fn):
    """fn(model_fn, shape, steps, objective, generator) must equal ddim_sample (the package's sample_loop) on a fixed
    model_fn whose x0-hat leaves [-1, 1], for v and eps and for 1 step; returns fn."""
    shape = (3, 3, 8, 8)
    pattern = torch.linspace(-1, 1, 3 * 8 * 8).view(1, 3, 8, 8)

    def model_fn(x, log_snr):  # a fixed stand-in for the guided U-Net
        if not (torch.is_tensor(log_snr) and tuple(log_snr.shape) == (x.shape[0],)):
            raise ExerciseError(f"model_fn was given log_snr of shape {tuple(getattr(log_snr, 'shape', ()))}; give it "
                                "one value per image, [B]: log_snrs[i].expand(B).")
        return 0.7 * x + 1.5 * pattern * torch.tanh(log_snr / 4).view(-1, 1, 1, 1)

    with torch.random.fork_rng(devices=[]), torch.no_grad():
        for objective, steps in (("v", 6), ("eps", 4), ("v", 1)):
            gen = lambda: torch.Generator().manual_seed(steps)
            torch.manual_seed(1234)
            got = fn(model_fn, shape, steps, objective, gen())
            want = ddim_sample(model_fn, shape, steps, objective, gen())
            if not torch.is_tensor(got) or tuple(got.shape) != shape:
                raise ExerciseError(f"you returned {getattr(got, 'shape', type(got).__name__)}, expected a tensor of "
                                    f"shape {shape}; return the final x0-hat.")
            if torch.allclose(got.float(), want, atol=1e-4):
                continue
            x1 = torch.randn(shape, generator=gen())
            torch.manual_seed(1234)
            x1_global = torch.randn(shape)
            same = lambda x, **v: torch.allclose(got.float(), _ddim_variant(model_fn, x, steps, objective, **v), atol=1e-4)
            hint = next((h for ok, h in (
                (lambda: same(x1, thresholding="none"), "threshold every x0-hat with D.threshold(x0, \"dynamic\") "
                                                        "before the step"),
                (lambda: same(x1, thresholding="static"), "use dynamic thresholding, D.threshold(x0, \"dynamic\"), "
                                                          "not clipping"),
                (lambda: same(x1, last="step"), "on the last step return x0-hat itself, not one more ddim_step"),
                (lambda: same(x1, convert=False), "the network predicts the objective (v or eps): convert it with "
                                                  "D.prediction_to_x0(objective, pred, x, log_snr) first"),
                (lambda: same(x1_global), "draw x_1 with torch.randn(shape, generator=generator), so that a seed means "
                                          "the same samples")) if ok()),
                "use log_snrs = D.sampling_log_snrs(steps) (steps + 1 values from t = 1 to t = 0): step i predicts at "
                "log_snrs[i] and moves to log_snrs[i + 1] with D.ddim_step(x, x0, lam_t, lam_s, 0.0)")
            raise ExerciseError(f"objective {objective!r}, {steps} steps: your samples differ from the package's DDIM "
                                f"by up to {(got.float() - want).abs().max().item():.3g}; {hint}.")
    return fn


def rotated_chance(images, captions) -> float:
    """Reference for notebook 06: chance alignment, each real image i scored against caption (i + 1) % n."""
    from .metrics import alignment_accuracy
    return alignment_accuracy(images, list(captions[1:]) + list(captions[:1]))


_CHANCE_DATA = {}


def _chance_data():
    """Real images of 12 one-object and 12 two-object captions (rendered once)."""
    if not _CHANCE_DATA:
        from .data import all_captions, from_uint8, render
        captions = all_captions()
        one, two = [c for c in captions if len(c.split()) == 4][::4], [c for c in captions if len(c.split()) > 4][::84]
        for name, caps in (("one object", one), ("mixed", one[:6] + two[:6])):
            _CHANCE_DATA[name] = (torch.stack([from_uint8(render(c, 32, seed=i)) for i, c in enumerate(caps)]), caps)
    return _CHANCE_DATA


def check_chance(fn):
    """fn(images, captions) must give rotated_chance on real images of one-object captions and of a mix; returns fn."""
    from .metrics import alignment_accuracy
    for name, (images, captions) in _chance_data().items():
        got, want = fn(images, captions), rotated_chance(images, captions)
        try:
            got = float(got)
        except (TypeError, ValueError):
            raise ExerciseError(f"you returned {type(got).__name__}; return one number, the mean alignment.") from None
        if abs(got - want) < 1e-6:
            continue
        hint = ("that is the images' alignment with their own captions; chance scores each image against another "
                "caption" if abs(got - alignment_accuracy(images, captions)) < 1e-6 else
                "return a fraction in [0, 1], not a percentage" if abs(got - 100 * want) < 1e-4 else
                "rotate the captions the other way: image i against captions[(i + 1) % n]"
                if abs(got - alignment_accuracy(images, list(captions[-1:]) + list(captions[:-1]))) < 1e-6 else
                "score image i against captions[(i + 1) % n] with alignment_accuracy")
        raise ExerciseError(f"{name} captions: you give {got:.3f}, expected {want:.3f}; {hint}.")
    return fn


def per_pair_alignment(images, captions, pairs) -> dict:
    """Reference for notebook 06: {pair: mean caption alignment of the images whose caption names it}, for each
    pair that some caption names (a caption naming two pairs counts for both)."""
    from .metrics import caption_alignment
    scores = caption_alignment(images, captions)  # [B], one per image
    named = {pair: [k for k, c in enumerate(captions) if pair in c] for pair in pairs}
    return {pair: scores[ks].mean().item() for pair, ks in named.items() if ks}


def check_per_pair(fn):
    """fn(images, captions, pairs) must equal per_pair_alignment on images of held-out captions, some drawn from
    other captions; returns fn."""
    from .data import all_captions, from_uint8, render
    captions = [c for c in all_captions("held_out") if "pink" not in c][::23]
    drawn = [c if i % 3 else captions[(i + 5) % len(captions)] for i, c in enumerate(captions)]  # every third is wrong
    images = torch.stack([from_uint8(render(c, 32, seed=i)) for i, c in enumerate(drawn)])
    pairs = ["blue triangle", "yellow circle", "purple square", "pink triangle"]  # no caption names the last
    got, want = fn(images, captions, pairs), per_pair_alignment(images, captions, pairs)
    if not isinstance(got, dict):
        raise ExerciseError(f"you returned {type(got).__name__}; return a dict {{pair: mean alignment}}.")
    if set(got) != set(want):
        raise ExerciseError(f"your pairs are {sorted(got)}, expected {sorted(want)}; leave out a pair that no caption "
                            "names (its mean would be undefined).")
    for pair, w in want.items():
        g = float(got[pair])
        if abs(g - w) < 1e-6:
            continue
        both = [c for c in captions if sum(p in c for p in pairs) > 1]
        hint = ("return fractions in [0, 1], not percentages" if abs(g - 100 * w) < 1e-4 else
                f"a caption that names two pairs (such as {both[0]!r}) counts for both" if both else
                "average caption_alignment(images, captions) over the images whose caption contains the pair")
        raise ExerciseError(f"{pair!r}: you give {g:.3f}, expected {w:.3f}; {hint}.")
    return fn


# §07 guidance and thresholding: classifier-free guidance, then the threshold, inside the loop ------------------
def guided_x0(model_fn, x_t, log_snr, w, method="dynamic", objective="v"):
    """The x0-hat one sampling step uses [Imagen Sec. 2.2-2.3], as Imagen.sample computes it: the conditional and
    unconditional predictions, combined by classifier-free guidance, turned into x0-hat, then thresholded.
    model_fn(x_t, log_snr, text) -> the network's prediction with (text=True) or without (False) the caption."""
    pred = D.classifier_free_guidance(model_fn(x_t, log_snr, True), model_fn(x_t, log_snr, False), w)  # p_u + w (p_c - p_u)
    x0 = D.prediction_to_x0(objective, pred, x_t, log_snr)  # affine in pred: guiding v, eps or x0 is the same
    return D.threshold(x0, method)  # AFTER guidance: guidance is what pushes x0-hat out of range


def _toy_guided_model():
    """A fixed model_fn(x_t, log_snr, text) whose two predictions differ in places, so guidance pushes x0-hat far out."""
    g = torch.Generator().manual_seed(7)
    a, b = torch.randn(2, 3, 8, 8, generator=g)

    def model_fn(x_t, log_snr, text):
        scale = torch.sigmoid(log_snr).view(-1, 1, 1, 1)
        return torch.tanh(x_t + (0.6 * a if text else -0.3 * b)) * (0.5 + scale) + (0.4 * b if text else 0.0)
    return model_fn


def check_guided_x0(fn) -> None:
    """fn(model_fn, x_t, log_snr, w, method, objective) must equal guided_x0: guidance on the predictions, then x0-hat,
    then the threshold; checked at w = 1, 0 and 7.5, for v and eps, with no, static and dynamic thresholding."""
    g = torch.Generator().manual_seed(0)
    x_t = torch.randn(4, 3, 8, 8, generator=g)
    log_snr = torch.tensor([-3.0, -1.0, 0.5, 2.0])
    model_fn = _toy_guided_model()
    pc, pu = model_fn(x_t, log_snr, True), model_fn(x_t, log_snr, False)
    to_x0 = lambda objective, p: D.prediction_to_x0(objective, p, x_t, log_snr)
    for objective in ("v", "eps"):
        for w, method in ((1.0, "none"), (0.0, "none"), (7.5, "none"), (7.5, "static"), (7.5, "dynamic"), (1.0, "dynamic")):
            got = fn(model_fn, x_t.clone(), log_snr.clone(), w, method, objective)
            want = guided_x0(model_fn, x_t, log_snr, w, method, objective)
            if not torch.is_tensor(got) or got.shape != want.shape:
                raise ExerciseError(f"w={w}, {method}: expected a tensor of shape {tuple(want.shape)} (x0-hat, like x_t), "
                                    f"got {getattr(got, 'shape', type(got).__name__)}; return the thresholded x0-hat.")
            if torch.allclose(got, want, atol=1e-4):
                continue
            same = lambda other: torch.allclose(got, other, atol=1e-4)
            th = lambda x: D.threshold(x, method)
            wrong = {  # the likely mistakes, each as it would compute
                "the threshold comes after guidance: combine the raw predictions first, then convert and threshold "
                "the guided x0-hat once (thresholding each x0-hat before combining lets guidance push it out of range again)":
                    [D.classifier_free_guidance(th(to_x0(objective, pc)), th(to_x0(objective, pu)), w)],
                "w multiplies the difference (pred_c - pred_u), added to the unconditional prediction: "
                "pred_u + w (pred_c - pred_u), so w = 0 gives pred_u":
                    [th(to_x0(objective, pc + w * (pu - pc))), th(to_x0(objective, w * pu + (1 - w) * pc)),
                     th(to_x0(objective, pc + w * pu))],
                "w = 1 must give the plain conditional prediction: use pred_u + w (pred_c - pred_u), not Imagen's "
                "(1 + w) pred_c - w pred_u form with the same w":
                    [th(to_x0(objective, pc + w * (pc - pu)))],
                "turn the guided prediction into x0-hat with D.prediction_to_x0(objective, pred, x_t, log_snr) before "
                "thresholding (the network predicts v or eps, not x0)":
                    [th(D.classifier_free_guidance(pc, pu, w))] + [th(to_x0(o, D.classifier_free_guidance(pc, pu, w)))
                                                                   for o in ("v", "eps") if o != objective],
                f"apply the threshold the method names (D.threshold(x0, method)); this was method={method!r}":
                    [to_x0(objective, D.classifier_free_guidance(pc, pu, w))]
                    + [D.threshold(to_x0(objective, D.classifier_free_guidance(pc, pu, w)), m)
                       for m in ("none", "static", "dynamic") if m != method],
            }
            hint = next((h for h, outs in wrong.items() if any(same(o) for o in outs)),
                        "call model_fn twice (text=True, then text=False), combine with pred_u + w (pred_c - pred_u), "
                        "convert with D.prediction_to_x0, then D.threshold(x0, method)")
            raise ExerciseError(f"objective {objective!r}, w = {w:g}, method {method!r}: your x0-hat differs from the "
                                f"sampler's by up to {(got - want).abs().max().item():.3g}; {hint}.")


# §08 super-resolution: down then up, upsample then augment, where a stage loses the caption --------------------
def check_down_up(fn):
    """fn(images, low_size) must equal minimagen.imagen.down_up: antialiased bilinear down to low_size, bilinear back."""
    import torch.nn.functional as F
    from .imagen import down_up
    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    got, want = fn(images, 4), down_up(images, 4)
    if got.shape != want.shape:
        raise ExerciseError(f"your result has shape {tuple(got.shape)}, expected {tuple(want.shape)}; enlarge the small "
                            "images back to images.shape[-1] pixels.")
    if torch.allclose(got, want, atol=1e-5):
        return fn

    def variant(down, up):
        low = F.interpolate(images, size=(4, 4), align_corners=False if down != "nearest" else None,
                            mode="nearest" if down == "nearest" else "bilinear", antialias=down == "antialias")
        return F.interpolate(low, size=(16, 16), mode=up, align_corners=False if up != "nearest" else None)
    hint = _first_match(got, [
        (variant("plain", "bilinear"), "going down, pass antialias=True: without it bilinear reads only 4 pixels "
                                       "per output pixel and aliases the fine detail"),
        (variant("antialias", "nearest"), "going up, use mode=\"bilinear\", not nearest"),
        (variant("nearest", "nearest"), "use mode=\"bilinear\" both ways (antialias=True going down)"),
    ], atol=1e-5)
    raise ExerciseError(f"your round trip differs from down_up by up to {(got - want).abs().max().item():.3g}; "
                        + (hint or "interpolate with mode=\"bilinear\", align_corners=False, antialias=True going down")
                        + ".")


def check_upsample_and_augment(fn):
    """fn(lowres, size, aug_level, generator=g) must equal minimagen.imagen.upsample_and_augment: upsample, then
    z = alpha lowres_up + sigma eps at the cosine schedule's log-SNR of each level (level 0: untouched), eps drawn
    with torch.randn(z.shape, generator=g); returns (z, log-SNR)."""
    from . import imagen as I
    low = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    levels, size = torch.tensor([0.0, 0.2, 0.5, 1.0]), 16
    gen = lambda: torch.Generator().manual_seed(1)  # the same noise for every candidate
    out = fn(low, size, levels, generator=gen())
    if not (isinstance(out, tuple) and len(out) == 2):
        raise ExerciseError("return two things, (z_aug, aug_log_snr), as noise_augment does.")
    (z, log_snr), (want_z, want_log_snr) = out, I.upsample_and_augment(low, size, levels, generator=gen())
    if z.shape != want_z.shape:
        raise ExerciseError(f"z has shape {tuple(z.shape)}, expected {tuple(want_z.shape)}; upsample the low-res "
                            f"image to size x size with resize(lowres, size).")
    if torch.allclose(z, want_z, atol=1e-5):
        if torch.is_tensor(log_snr) and log_snr.shape == want_log_snr.shape and torch.allclose(log_snr, want_log_snr,
                                                                                                atol=1e-4):
            return fn
        hint = ("return the level's log-SNR, get_schedule(\"cosine\")(aug_level), not the level itself"
                if torch.is_tensor(log_snr) and log_snr.shape == levels.shape and torch.allclose(log_snr, levels) else
                "return the log-SNR the U-Net is told: get_schedule(\"cosine\")(aug_level), one per image")
        raise ExerciseError(f"z is right but the log-SNR is {log_snr}, expected {want_log_snr}; {hint}.")
    up = I.resize(low, size)
    eps = torch.randn(up.shape, generator=gen())
    lv = levels.view(-1, 1, 1, 1)
    hint = _first_match(z, [
        (I.resize(I.noise_augment(low, levels, generator=gen())[0], size),
         "the noise is added after upsampling: resize first, then corrupt, so the SR stage's input has fresh noise "
         "in every output pixel"),
        (up + lv * eps, "the level is a time in the schedule, not the noise std: alpha, sigma come from "
                        "log_snr = get_schedule(\"cosine\")(aug_level)"),
        ((1 - lv ** 2).sqrt() * up + lv * eps, "the level is a time in the schedule, not sigma: alpha, sigma come from "
                                               "log_snr = get_schedule(\"cosine\")(aug_level)"),
        (D.q_sample(up, D.cosine_log_snr(levels), eps), "level 0 must pass the input untouched (the schedule's t = 0 "
                                                        "still has sigma = 0.012): torch.where(aug_level <= 0, ...)"),
    ], atol=1e-5)
    raise ExerciseError(f"z differs from upsample_and_augment's by up to {(z - want_z).abs().max().item():.3g}; "
                        + (hint or "draw the noise once at the output size with torch.randn(up.shape, "
                                   "generator=generator), then z = alpha * up + sigma * noise")
                        + ".")


def first_drop(rows, drop=0.1):
    """Reference for notebook 08: the lowest aug_level whose alignment is more than `drop` below the alignment at
    level 0 (None: no such level)."""
    at_zero = next(r["alignment"] for r in rows if r["aug_level"] == 0)
    lower = [r["aug_level"] for r in rows if r["alignment"] < at_zero - drop]
    return min(lower) if lower else None


def check_first_drop(fn):
    """fn(rows, drop) must equal first_drop on sweeps built to tell the plausible readings apart."""
    sweep = lambda *pairs: [{"aug_level": a, "alignment": b} for a, b in pairs]

    def reading(rows, drop, base=None, pick=min):  # first_drop with one of the plausible mistakes
        base = rows[0]["alignment"] if base is None else base
        lower = [r["aug_level"] for r in rows if r["alignment"] < base - drop]
        return pick(lower) if lower else None
    mistakes = [
        (lambda rows, drop: reading(rows, drop, base=max(r["alignment"] for r in rows)),
         "measure the drop from the alignment at level 0, not from the best level"),
        (lambda rows, drop: reading(rows, drop, pick=max), "return the lowest such level (min), not the highest"),
        (lambda rows, drop: reading(rows, 0.1), "use the drop argument, not a fixed 0.1"),
    ]
    for rows, drop in [(sweep((0.0, 0.9), (0.1, 0.95), (0.2, 0.84), (0.5, 0.6), (1.0, 0.7)), 0.1),
                       (sweep((0.0, 1.0), (0.2, 0.85), (0.5, 0.95), (0.7, 0.5)), 0.1),
                       (sweep((0.0, 0.8), (0.5, 0.75), (1.0, 0.72)), 0.1),
                       (sweep((0.0, 0.8), (0.3, 0.6), (1.0, 0.2)), 0.25)]:
        got, want = fn(rows, drop), first_drop(rows, drop)
        if got == want:
            continue
        hint = ("return None when no level falls more than drop below" if want is None else
                next((h for m, h in mistakes if m(rows, drop) == got), "compare each level's alignment with the one at "
                     "level 0 minus drop, and keep the lowest level that falls below it"))
        raise ExerciseError(f"on {[(r['aug_level'], r['alignment']) for r in rows]} with drop={drop} you return "
                            f"{got}, expected {want}; {hint}.")
    return fn


# §09 the full cascade: parameter shares, FLOPs per call, a cascade that fails loudly ---------------------------
def parameter_shares(unets) -> list:
    """Each stage's fraction of all the cascade's U-Net parameters (elements, not tensors), base first."""
    from .unet import count_parameters
    sizes = [count_parameters(unet) for unet in unets]  # sum of p.numel() over each U-Net's parameters
    return [n / sum(sizes) for n in sizes]


def _toy_unets():
    """Two tiny U-Nets (a base at 8 px, an SR stage at 16 px): a cascade to check exercises on in well under a second."""
    from .unet import Unet, UnetConfig
    torch.manual_seed(0)
    cfg = dict(dim=8, dim_mults=(1,), num_resnet_blocks=(1,), cross_attn=(True,), attn_heads=1, attn_dim_head=8,
               text_embed_dim=8)
    return [Unet(UnetConfig(**cfg, image_size=8)), Unet(UnetConfig(**cfg, image_size=16, lowres_cond=True))]


def check_parameter_shares(fn) -> None:
    """fn(unets) must give each U-Net's share of the parameters, base first, as parameter_shares does (on two tiny
    cascades, one in the other order, so no number can be hard-coded)."""
    from torch import nn
    base, sr = _toy_unets()
    for unets in ([base, sr], [sr, base, nn.Linear(40, 30)]):
        got, want = fn(unets), parameter_shares(unets)
        try:
            got = [float(s) for s in got]
        except (TypeError, ValueError):
            raise ExerciseError(f"expected a list of {len(want)} numbers (one share per U-Net, base first), got "
                                f"{type(got).__name__}; return e.g. [n / total for n in sizes].") from None
        if len(got) != len(want):
            raise ExerciseError(f"{len(unets)} U-Nets but {len(got)} shares: return one share per U-Net, base first.")
        if all(abs(a - b) < 1e-9 for a, b in zip(got, want)):
            continue
        tensors = [len(list(u.parameters())) for u in unets]
        hint = ("return fractions (they sum to 1), not percentages" if abs(sum(got) - 100) < 1e-6 else
                "count parameter elements (p.numel(), or unet.count_parameters), not parameter tensors"
                if all(abs(a - t / sum(tensors)) < 1e-9 for a, t in zip(got, tensors)) else
                "divide each stage's count by the total of all stages, so the shares sum to 1"
                if abs(sum(got) - 1) > 1e-6 else "keep the stages in the order given, base first")
        raise ExerciseError(f"shares {[round(s, 4) for s in got]}, expected {[round(s, 4) for s in want]}; {hint}.")


def flops_per_call(model, k: int) -> int:
    """FLOPs of one forward pass of stage k's U-Net for one image, counted by torch's FlopCounterMode
    (a multiply-add is 2 FLOPs). An SR stage also gets its low-res input, upsampled to its own size."""
    from torch.utils.flop_counter import FlopCounterMode
    size, dev = model.image_sizes[k], model.device
    embeds, text_mask = (t.to(dev) for t in model.text_encoder.encode(["a red circle"]))
    x, log_snr = torch.zeros(1, 3, size, size, device=dev), torch.zeros(1, device=dev)  # one image at stage k's size
    sr = model.lowres_sizes[k] is not None
    lowres, aug_log_snr = (torch.zeros_like(x), torch.zeros(1, device=dev)) if sr else (None, None)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.unets[k](x, log_snr, embeds, text_mask, lowres, aug_log_snr)
    return counter.get_total_flops()


class _ToyTextEncoder:
    """Stands in for the frozen text encoder in exercise checks: fixed embeddings [B, 5, 8] for any caption."""
    name, dim = "toy", 8

    def encode(self, captions):
        B = 1 if isinstance(captions, str) else len(captions)
        return torch.ones(B, 5, self.dim), torch.ones(B, 5, dtype=torch.bool)


_TOY_CASCADE = {}


def _toy_cascade():
    """The two tiny U-Nets as an Imagen cascade (8 -> 16 px), with their FLOPs per call (built once)."""
    if not _TOY_CASCADE:
        from .imagen import Imagen
        model = Imagen(_toy_unets(), _ToyTextEncoder())
        _TOY_CASCADE.update(model=model, flops=[flops_per_call(model, k) for k in range(len(model.unets))])
    return _TOY_CASCADE["model"], _TOY_CASCADE["flops"]


def check_flops_per_call(fn) -> None:
    """fn(model, k) must count the FLOPs of one forward pass of stage k's U-Net for one image, as flops_per_call does,
    on a tiny two-stage cascade (a base stage and an SR stage)."""
    from .errors import MinimagenError
    model, want = _toy_cascade()
    for k in range(len(model.unets)):
        try:
            got = fn(model, k)
        except MinimagenError as err:
            raise ExerciseError(f"stage {k} refused your call ({str(err)[:90]}...); give each U-Net x at its own size "
                                "model.image_sizes[k], and an SR stage also lowres of that size and aug_log_snr [1].") from None
        if not isinstance(got, (int, float)) or isinstance(got, bool):
            raise ExerciseError(f"stage {k}: expected a number of FLOPs, got {type(got).__name__}; return "
                                "counter.get_total_flops().")
        if got == want[k]:
            continue
        ratio = got / want[k]
        hint = ("count one image (batch 1): guidance's doubled batch is two images, and this is one call"
                if abs(ratio - 2) < 0.01 else
                "return FLOPs, not GFLOPs (no division by 1e9)" if abs(ratio - 1e-9) < 1e-11 else
                "FlopCounterMode already counts a multiply-add as 2 FLOPs: return counter.get_total_flops() as it is"
                if abs(ratio - 0.5) < 0.01 else
                f"call stage k's U-Net, model.unets[k], at its size model.image_sizes[k]"
                if any(got == f for j, f in enumerate(want) if j != k) else
                "call model.unets[k] once under FlopCounterMode, with a batch of one image, and return get_total_flops()")
        raise ExerciseError(f"stage {k}: you counted {got:.4g} FLOPs, expected {want[k]:.4g}; {hint}.")


def try_cascade(stages):
    """None if these shipped stages (names in data/checkpoints) load as a cascade, else the message of minimagen's error."""
    from .errors import MinimagenError
    from .notebook import load_toy_cascade
    try:
        load_toy_cascade(stages=stages, device="cpu")
    except MinimagenError as err:
        return str(err)
    return None


def check_try_cascade(fn) -> None:
    """fn(stages) must return None for cascades that load and minimagen's message for one that skips a stage."""
    from .errors import MinimagenError
    for stages, loads in ((("base32", "sr128"), False), (("sr64", "sr128"), True)):
        try:
            got = fn(stages)
        except MinimagenError:
            raise ExerciseError(f"{stages} raised MinimagenError out of your function; catch it "
                                "(except MinimagenError as err) and return str(err).") from None
        if loads and got is not None:
            raise ExerciseError(f"{stages} loads as a cascade (an SR-only one), but you returned {str(got)[:60]!r}; "
                                "return None when load_toy_cascade succeeds.")
        if not loads and not (isinstance(got, str) and "64 px" in got and "32 px" in got):
            raise ExerciseError(f"{stages} cannot load (sr128 upsamples from 64 px), but you returned {str(got)[:60]!r}; "
                                "return the error's message, str(err).")
