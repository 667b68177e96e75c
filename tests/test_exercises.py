"""Every exercise check fails on the stub and on a plausible wrong answer, and passes on the reference
(minimagen.exercises); `attempt` runs the reference in place of a stub and says so."""
import pytest
import torch

from minimagen import diffusion as D
from minimagen.exercises import ExerciseError, attempt, check_dynamic_threshold


def stub(x0, p, cap):
    raise NotImplementedError


def no_floor(x0, p, cap):  # forgets s >= 1: in-range samples get stretched
    s = torch.quantile(x0.abs().flatten(1), p, dim=1)
    s = (s if cap is None else s.clamp(max=cap)).view(-1, 1, 1, 1)
    return x0.clamp(-s, s) / s


def no_cap(x0, p, cap):  # ignores the cap
    return D.dynamic_threshold(x0, p, None)


def static(x0, p, cap):
    return x0.clamp(-1, 1)


def test_dynamic_threshold_check():
    check_dynamic_threshold(D.dynamic_threshold)
    with pytest.raises(NotImplementedError):
        check_dynamic_threshold(stub)
    for wrong, hint in ((no_floor, "at least 1"), (no_cap, "at most the cap"), (static, "divide by s")):
        with pytest.raises(ExerciseError, match=hint):
            check_dynamic_threshold(wrong)




# 01, 02, 10: quick start, text encoder, beyond the core
from minimagen import exercises as EX  # noqa: E402
from minimagen.imagen import min_snr_weight  # noqa: E402


def _stub(*args, **kwargs):
    raise NotImplementedError


@pytest.mark.parametrize("check, reference, wrongs", [
    ("check_guidance", lambda: D.classifier_free_guidance, [
        (lambda c, u, w: c + w * (c - u), "unconditional prediction alone"),   # the paper's (1 + w) form
        (lambda c, u, w: u + w * (u - c), "conditional prediction"),          # the difference the wrong way round
        (lambda c, u, w: u + w * c - u * w ** 0.5, "whole difference")]),
    ("check_running_mean", lambda: EX.running_mean, [
        (lambda v, k: [sum(v[i:i + k]) / k for i in range(len(v) - k)], "full windows"),  # one window short
        (lambda v, k: [sum(v[i:i + k]) / (k + 1) for i in range(len(v) - k + 1)], "divide the sum")]),
    ("check_pad_and_mask", lambda: EX.pad_and_mask, [
        (lambda l, p: (EX.pad_and_mask(l, p)[0], EX.pad_and_mask(l, p)[1].flip(1)), "padding goes on the right"),
        (lambda l, p: EX.pad_and_mask(l, 0), "not a fixed 0"),
        (lambda l, p: (EX.pad_and_mask(l, p)[0], EX.pad_and_mask(l, p)[1].long()), "torch.bool")]),
    ("check_padding_share", lambda: EX.padding_share, [
        (lambda q, k, n: n / (k @ q / q.shape[-1] ** 0.5).exp().sum().item(), "zero keys' own"),  # pads left out of Z
        (lambda q, k, n: n / (n + (k @ q).exp().sum().item()), "1/sqrt")]),                   # no 1/sqrt(d)
    ("check_t5_encodes", lambda: EX.t5_encodes, [
        (lambda c: len(c), "a repeat never reaches T5"),
        (lambda c: sum(len(set(c[i:i + 32])) for i in range(0, len(c), 32)), "across batches")]),
    ("check_karras_sigmas", lambda: D.karras_sigmas, [
        (lambda n, lo, hi, rho: D.karras_sigmas(n, lo, hi, rho)[:-1], "final sigma = 0"),
        (lambda n, lo, hi, rho: torch.cat([D.karras_sigmas(n, lo, hi, rho)[:-1].flip(0), torch.zeros(1)]), "rise"),
        (lambda n, lo, hi, rho: D.karras_sigmas(n, lo, hi, 1.0), "power rho")]),
    ("check_min_snr_weight", lambda: min_snr_weight, [
        (lambda lam, obj, g: lam.exp().clamp(max=g), "divide min"),                              # x0 weight for all
        (lambda lam, obj, g: min_snr_weight(lam, "eps" if obj == "v" else obj, g), "SNR \\+ 1"),
        (lambda lam, obj, g: lam.exp().clamp(min=g) / {"x0": 1, "eps": lam.exp(), "v": lam.exp() + 1}[obj], "min\\(SNR")]),
    ("check_inpaint_calls", lambda: EX.inpaint_calls, [
        (lambda s, u: s * u, "not resampled"),
        (lambda s, u: (s - 1) * u, "but the last")]),
])
def test_beyond_and_basics_checks(check, reference, wrongs):
    check = getattr(EX, check)
    check(reference())
    with pytest.raises(NotImplementedError):
        check(_stub)
    for wrong, hint in wrongs:
        with pytest.raises(ExerciseError, match=hint):
            check(wrong)


def test_alignment_predictions_check():
    right = {"a large red circle": 1.0, "a small red circle": 3 / 4, "a large blue circle": 1 / 4,
             "a red circle above a blue square": 2 / 6}
    assert EX.check_alignment_predictions(lambda: right) == pytest.approx(right)
    EX.check_alignment_predictions(EX.red_circle_alignments)
    with pytest.raises(NotImplementedError):
        EX.check_alignment_predictions(_stub)
    for caption, guess, hint in (("a large blue circle", 3 / 4, "exactly one object"),
                                 ("a red circle above a blue square", 3 / 6, "only the red circle"),
                                 ("a small red circle", 1.0, "only the size"),
                                 ("a large red circle", None, "no prediction")):
        with pytest.raises(ExerciseError, match=hint):
            EX.check_alignment_predictions(lambda: {**right, caption: guess})


# §03 forward diffusion -------------------------------------------------------------------------------------------
import math  # noqa: E402

from minimagen import exercises as E  # noqa: E402


def _fails(check, wrong, hint):
    with pytest.raises(ExerciseError, match=hint):
        check(wrong)


def _not_written(*args, **kwargs):
    raise NotImplementedError


def _b(v):  # [B] -> [B, 1, 1, 1]
    return v.view(-1, 1, 1, 1)


def test_q_sample_check():
    E.check_q_sample(D.q_sample)
    with pytest.raises(NotImplementedError):
        E.check_q_sample(_not_written)
    sig = torch.sigmoid
    _fails(E.check_q_sample, lambda x0, lam, n: _b(sig(lam)) * x0 + _b(sig(-lam)) * n, "take the square root")
    _fails(E.check_q_sample, lambda x0, lam, n: sig(lam).sqrt() * x0 + sig(-lam).sqrt() * n, r"\[B, 1, 1, 1\]")
    _fails(E.check_q_sample, lambda x0, lam, n: _b(sig(-lam).sqrt()) * x0 + _b(sig(lam).sqrt()) * n, "not the other way")


def test_training_target_check():
    E.check_training_target(D.training_target)
    with pytest.raises(NotImplementedError):
        E.check_training_target(_not_written)

    def flipped(objective, x0, noise, lam):
        a, s = (_b(u) for u in D.alpha_sigma(lam))
        return noise if objective == "eps" else s * x0 - a * noise

    def no_broadcast(objective, x0, noise, lam):
        a, s = D.alpha_sigma(lam)
        return noise if objective == "eps" else a * noise - s * x0

    def no_sqrt(objective, x0, noise, lam):
        return noise if objective == "eps" else _b(torch.sigmoid(lam)) * noise - _b(torch.sigmoid(-lam)) * x0

    _fails(E.check_training_target, flipped, "sign is flipped")
    _fails(E.check_training_target, no_broadcast, r"\[B, 1, 1, 1\]")
    _fails(E.check_training_target, no_sqrt, "alpha = sqrt")
    _fails(E.check_training_target, lambda objective, x0, noise, lam: noise, "mix of the noise")


def test_loss_check():
    E.check_loss(E.reference_loss)
    with pytest.raises(NotImplementedError):
        E.check_loss(_not_written)

    def on_x0(model_fn, objective, x0, lam, noise):
        return (model_fn(x0, lam) - D.training_target(objective, x0, noise, lam)).square().mean()

    def summed(model_fn, objective, x0, lam, noise):
        return (model_fn(D.q_sample(x0, lam, noise), lam) - D.training_target(objective, x0, noise, lam)).square().sum()

    def unreduced(model_fn, objective, x0, lam, noise):
        return (model_fn(D.q_sample(x0, lam, noise), lam) - D.training_target(objective, x0, noise, lam)).square()

    _fails(E.check_loss, on_x0, "not the clean x0")
    _fails(E.check_loss, summed, "not their sum")
    _fails(E.check_loss, unreduced, "one number")


def test_cosine_log_snr_check():
    E.check_cosine_log_snr(D.cosine_log_snr)
    with pytest.raises(NotImplementedError):
        E.check_cosine_log_snr(_not_written)
    _fails(E.check_cosine_log_snr, lambda t: torch.zeros_like(t), "lambda = log")
    _fails(E.check_cosine_log_snr, lambda t: torch.log(torch.cos(math.pi / 2 * t) ** 2 / torch.sin(math.pi / 2 * t) ** 2),
           "offset s")
    _fails(E.check_cosine_log_snr, lambda t: torch.log(torch.cos(math.pi / 2 * (t + 0.008) / 1.008) ** 2), "divide by sigma")


def test_eps_from_v_check():
    E.check_eps_from_v(E.reference_eps_from_v)
    with pytest.raises(NotImplementedError):
        E.check_eps_from_v(_not_written)
    ab = lambda lam: (_b(u) for u in D.alpha_sigma(lam))  # noqa: E731
    _fails(E.check_eps_from_v, lambda v, x_t, lam: (lambda a, s: a * x_t + s * v)(*ab(lam)), "not the other way")
    _fails(E.check_eps_from_v, lambda v, x_t, lam: (lambda a, s: s * x_t - a * v)(*ab(lam)), "add alpha v")
    _fails(E.check_eps_from_v, lambda v, x_t, lam: v, "expand sigma")


def test_shifted_log_snr_check():
    assert E.check_shifted_log_snr(E.reference_shifted_log_snr) is E.reference_shifted_log_snr
    with pytest.raises(NotImplementedError):
        E.check_shifted_log_snr(_not_written)
    _fails(E.check_shifted_log_snr, lambda t, shift: D.cosine_log_snr(t) + shift, "clamp")
    _fails(E.check_shifted_log_snr, lambda t, shift: (D.cosine_log_snr(t) - shift).clamp(-20, 20), "add the shift")
    _fails(E.check_shifted_log_snr, lambda t, shift: D.cosine_log_snr(t), "return")


# §04 reverse process ---------------------------------------------------------------------------------------------
def test_ddim_step_check():
    assert E.check_ddim_step(E.reference_ddim_step) is E.reference_ddim_step
    with pytest.raises(NotImplementedError):
        E.check_ddim_step(_not_written)

    def with_lam_s_eps(x_t, x0, lt, ls, randn):  # eps-hat from the wrong level: lands on x_t again
        a_s, s_s = (_b(u) for u in D.alpha_sigma(ls))
        return a_s * x0 + s_s * D.predict_eps_from_x0(x_t, ls, x0)

    def adds_noise(x_t, x0, lt, ls, randn):
        return D.ddim_step(x_t, x0, lt, ls, 0.0) + _b(D.alpha_sigma(ls)[1]) * randn()

    def no_broadcast(x_t, x0, lt, ls, randn):
        a_s, s_s = D.alpha_sigma(ls)
        return a_s * x0 + s_s * D.predict_eps_from_x0(x_t, lt, x0)

    _fails(E.check_ddim_step, with_lam_s_eps, "x_t again")
    _fails(E.check_ddim_step, adds_noise, "do not call randn")
    _fails(E.check_ddim_step, no_broadcast, r"\[B, 1, 1, 1\]")


def _loop(model_fn, shape, steps, step, seed=0, thresholding="dynamic", callback=None, objective="v", schedule="cosine",
          device="cpu", use_threshold=True, one_generator=True, last_returns_x0=True, calls_back=True):
    """The sampling loop with switches for the plausible mistakes the check must catch."""
    g = torch.Generator().manual_seed(seed)

    def randn():
        return torch.randn(shape, generator=g if one_generator else None)

    lams = D.sampling_log_snrs(steps, schedule)
    x = randn() if one_generator else torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    for i in range(steps):
        lam_t, lam_s = lams[i].expand(shape[0]), lams[i + 1].expand(shape[0])
        x0_raw = D.prediction_to_x0(objective, model_fn(x, lam_t), x, lam_t)
        x0 = D.threshold(x0_raw, thresholding) if use_threshold else x0_raw
        if callback is not None and calls_back:
            callback(i, lam_t, x, x0_raw, x0)
        if i == steps - 1 and last_returns_x0:
            return x0
        x = step(x, x0, lam_t, lam_s, randn)
    return x


def test_sample_check():
    from functools import partial
    assert E.check_sample(E.reference_sample) is E.reference_sample
    assert E.check_sample(_loop) is _loop  # the switches' defaults are the right loop
    with pytest.raises(NotImplementedError):
        E.check_sample(_not_written)
    _fails(E.check_sample, partial(_loop, last_returns_x0=False), "does not step")
    _fails(E.check_sample, partial(_loop, use_threshold=False), "threshold x0-hat")
    _fails(E.check_sample, partial(_loop, one_generator=False), "one generator")
    _fails(E.check_sample, partial(_loop, calls_back=False), "callback")
    _fails(E.check_sample, lambda *a, objective="v", **k: _loop(*a, **k), "objective argument")


def test_posterior_mean_from_eps_check():
    E.check_posterior_mean_from_eps(E.reference_posterior_mean_from_eps)
    with pytest.raises(NotImplementedError):
        E.check_posterior_mean_from_eps(_not_written)

    def parts(lt, ls):
        (a_t, s_t), (a_s, _) = ((_b(u) for u in D.alpha_sigma(lam)) for lam in (lt, ls))
        return a_t, s_t, a_s, _b(-torch.expm1(lt - ls))

    _fails(E.check_posterior_mean_from_eps, lambda x, e, lt, ls: (lambda a_t, s_t, a_s, c: x - c * s_t * e)(*parts(lt, ls)),
           "alpha_s / alpha_t")
    _fails(E.check_posterior_mean_from_eps,
           lambda x, e, lt, ls: (lambda a_t, s_t, a_s, c: a_s / a_t * (x - s_t * e))(*parts(lt, ls)), "by c")
    _fails(E.check_posterior_mean_from_eps, lambda x, e, lt, ls: x, "mu =")


def test_one_step_sample_check():
    assert E.check_one_step_sample(E.reference_one_step_sample) is E.reference_one_step_sample
    with pytest.raises(NotImplementedError):
        E.check_one_step_sample(_not_written)

    def one_step(model_fn, shape, seed=0, objective="v", schedule="cosine", device="cpu", method="dynamic", t=1.0):
        x = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
        lam = D.get_schedule(schedule)(torch.full((shape[0],), t))
        return D.threshold(D.prediction_to_x0(objective, model_fn(x, lam), x, lam), method)

    from functools import partial
    E.check_one_step_sample(one_step)
    _fails(E.check_one_step_sample, partial(one_step, method="none"), "dynamic thresholding")
    _fails(E.check_one_step_sample, partial(one_step, method="static"), "not static clipping")
    _fails(E.check_one_step_sample, partial(one_step, t=0.0), "at t = 1")
    _fails(E.check_one_step_sample, lambda model_fn, shape, **k: torch.zeros(shape), "draw x_1")


def test_ddim_eta_step_check():
    assert E.check_ddim_eta_step(D.ddim_step) is D.ddim_step
    with pytest.raises(NotImplementedError):
        E.check_ddim_eta_step(_not_written)

    def eta_step(x_t, x0, lt, ls, z, eta, with_c=True, reduce=True, eta_on_std=True):
        a_s, s_s = (_b(u) for u in D.alpha_sigma(ls))
        c = _b(-torch.expm1(lt - ls)) if with_c else 1.0
        s_eta = (eta if eta_on_std else eta ** 0.5) * (c * s_s**2) ** 0.5
        direction = (s_s**2 - s_eta**2).clamp(min=0).sqrt() if reduce else s_s
        return a_s * x0 + direction * D.predict_eps_from_x0(x_t, lt, x0) + s_eta * z

    from functools import partial
    E.check_ddim_eta_step(eta_step)
    _fails(E.check_ddim_eta_step, partial(eta_step, with_c=False), "include c")
    _fails(E.check_ddim_eta_step, partial(eta_step, reduce=False), "replaces part of sigma_s")
    _fails(E.check_ddim_eta_step, partial(eta_step, eta_on_std=False), "not the variance")


def _film_forward(film, residual=True):
    import torch.nn.functional as F

    def forward(block, x, cond):
        h = block.conv1(F.silu(block.norm1(x)))
        scale, shift = block.to_scale_shift(cond)[:, :, None, None].chunk(2, dim=1)
        h = block.conv2(F.silu(film(block.norm2(h), scale, shift)))
        return x + h if residual else h
    return forward


def test_resnet_block_check():
    from minimagen.exercises import check_resnet_block
    from minimagen.unet import ResnetBlock

    def stub(block, x, cond):
        raise NotImplementedError
    check_resnet_block(ResnetBlock.forward)
    check_resnet_block(_film_forward(lambda n, s, t: n * (1 + s) + t))  # the notebook's solution
    with pytest.raises(NotImplementedError):
        check_resnet_block(stub)
    for film, residual, hint in ((lambda n, s, t: n * s + t, True, r"\(1 \+ scale\)"),
                                 (lambda n, s, t: n * (1 + t) + s, True, "swapped"),
                                 (lambda n, s, t: n * (1 + s) + t, False, "residual is missing"),
                                 (lambda n, s, t: n + t, True, "follow x -> norm1")):
        with pytest.raises(ExerciseError, match=hint):
            check_resnet_block(_film_forward(film, residual))
    with pytest.raises(ExerciseError, match="keeps the shape"):
        check_resnet_block(lambda block, x, cond: x.mean(1))


def test_cross_attention_check():
    import torch.nn.functional as F

    from minimagen.exercises import check_cross_attention, cross_attention_by_hand
    from minimagen.unet import CrossAttention

    def solution(layer, x, tokens, mask):  # the notebook's solution
        B, C, H, W = x.shape
        h = layer.norm(x.flatten(2).transpose(1, 2))
        q = layer.to_q(h)
        k, v = layer.text_to_kv(tokens).chunk(2, dim=-1)
        q, k, v = (t.view(B, t.shape[1], layer.heads, -1).transpose(1, 2) for t in (q, k, v))
        scores = q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5
        scores = scores.masked_fill(~mask[:, None, None, :], float("-inf"))
        out = (scores.softmax(dim=-1) @ v).transpose(1, 2).reshape(B, H * W, -1)
        return x + layer.to_out(out).transpose(1, 2).reshape(B, C, H, W)

    def sdpa_without_mask(layer, x, tokens, mask):  # written independently of the check's helper
        B, C, H, W = x.shape
        h = layer.norm(x.flatten(2).transpose(1, 2))
        q, (k, v) = layer.to_q(h), layer.text_to_kv(tokens).chunk(2, dim=-1)
        q, k, v = (t.view(B, t.shape[1], layer.heads, -1).transpose(1, 2) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, H * W, -1)
        return x + layer.to_out(out).transpose(1, 2).reshape(B, C, H, W)

    def stub(layer, x, tokens, mask):
        raise NotImplementedError

    check_cross_attention(CrossAttention.forward)
    check_cross_attention(solution)
    check_cross_attention(cross_attention_by_hand)
    with pytest.raises(NotImplementedError):
        check_cross_attention(stub)
    with pytest.raises(ExerciseError, match="padding tokens are attended"):
        check_cross_attention(sdpa_without_mask)
    for flags, hint in (({"softmax_dim": -2}, "wrong axis"), ({"softmax_dim": -2, "fill": -1e9}, "wrong axis"),
                        ({"scaled": False}, "not scaled"), ({"residual": False}, "residual is missing"),
                        ({"split_heads": False}, "heads are not split"), ({"use_mask": False}, "padding")):
        with pytest.raises(ExerciseError, match=hint):
            check_cross_attention(lambda layer, x, t, m, flags=flags: cross_attention_by_hand(layer, x, t, m, **flags))


def test_level_parameters_check():
    from minimagen.exercises import check_level_parameters, level_parameters
    from minimagen.unet import count_parameters

    def stub(unet, i):
        raise NotImplementedError
    check_level_parameters(level_parameters)
    with pytest.raises(NotImplementedError):
        check_level_parameters(stub)
    for wrong, hint in ((lambda u, i: count_parameters(u.downs[i]) + count_parameters(u.ups[i]), "two resamplers"),
                        (lambda u, i: count_parameters(u.downs[i]) + count_parameters(u.downsamples[i]), "up path"),
                        (lambda u, i: count_parameters(u), "not the whole U-Net"),
                        (lambda u, i: 0, "sum p.numel")):
        with pytest.raises(ExerciseError, match=hint):
            check_level_parameters(wrong)


def test_skip_stds_check():
    from minimagen.exercises import check_skip_stds, skip_stds

    def stub(net, inputs):
        raise NotImplementedError

    def hooks_on(modules_of, pre=True, set_scale=True):
        def fn(net, inputs):
            result = {}
            for scale in (2 ** -0.5, 1.0):
                if set_scale:
                    net.skip_scale = scale
                stds = []
                register = "register_forward_pre_hook" if pre else "register_forward_hook"
                hooks = [getattr(m, register)(lambda m, args, *out: stds.append((out[0] if out else args[0]).std().item()))
                         for m in modules_of(net)]
                with torch.no_grad():
                    net(*inputs)
                for hk in hooks:
                    hk.remove()
                result[scale] = stds
            return result
        return fn

    check_skip_stds(skip_stds)
    check_skip_stds(hooks_on(lambda net: list(net.ups)[-2::-1] + [net.out]))  # the notebook's solution
    with pytest.raises(NotImplementedError):
        check_skip_stds(stub)
    for wrong, hint in ((hooks_on(lambda net: list(net.ups)[::-1] + [net.out]), "additions in a 3-level"),
                        (lambda net, inputs: {k: v[::-1] for k, v in skip_stds(net, inputs).items()}, "deepest first"),
                        (hooks_on(lambda net: list(net.ups)[-2::-1] + [net.out], set_scale=False), "set net.skip_scale"),
                        (hooks_on(lambda net: list(net.ups)[-2::-1] + [net.out], pre=False), "PRE-hooks"),
                        (lambda net, inputs: [1.0, 1.0], "dict with the two keys")):
        with pytest.raises(ExerciseError, match=hint):
            check_skip_stds(wrong)


def _loss_parts(unet, x0, embeds, mask, objective, p):
    """A learner's loss, step by step, for the wrong answers below."""
    B = x0.shape[0]
    t = torch.rand(B)
    eps = torch.randn_like(x0)
    drop = torch.rand(B) < p
    log_snr = D.cosine_log_snr(t)
    alpha, sigma = (a.view(-1, 1, 1, 1) for a in D.alpha_sigma(log_snr))
    return t, eps, drop, log_snr, alpha, sigma, alpha * x0 + sigma * eps


def my_training_loss(unet, x0, embeds, mask, objective="v", p=0.1):  # right, written out by hand
    t, eps, drop, log_snr, alpha, sigma, x_t = _loss_parts(unet, x0, embeds, mask, objective, p)
    pred = unet(x_t, log_snr, embeds, mask, None, None, drop)
    target = alpha * eps - sigma * x0 if objective == "v" else eps
    return ((pred - target) ** 2).mean()


def loss_mask_instead_of_drop(unet, x0, embeds, mask, objective="v", p=0.1):  # right too: hides the caption's tokens
    t, eps, drop, log_snr, alpha, sigma, x_t = _loss_parts(unet, x0, embeds, mask, objective, p)
    pred = unet(x_t, log_snr, embeds, mask & ~drop[:, None])
    return torch.nn.functional.mse_loss(pred, D.training_target(objective, x0, eps, log_snr))


def _wrong_loss(kind):
    def loss(unet, x0, embeds, mask, objective="v", p=0.1):
        t, eps, drop, log_snr, alpha, sigma, x_t = _loss_parts(unet, x0, embeds, mask, objective, p)
        if kind == "no_broadcast":
            a, s = D.alpha_sigma(log_snr)
            x_t = a * x0 + s * eps
        if kind == "zeros":
            embeds, drop = embeds * (~drop).float()[:, None, None], None
        if kind == "inverted":
            drop = ~drop
        if kind == "order":  # the noise drawn before the times
            torch.manual_seed(torch.initial_seed())
            eps = torch.randn_like(x0)
            t = torch.rand(x0.shape[0])
            drop = torch.rand(x0.shape[0]) < p
            log_snr = D.cosine_log_snr(t)
            alpha, sigma = (a.view(-1, 1, 1, 1) for a in D.alpha_sigma(log_snr))
            x_t = alpha * x0 + sigma * eps
        if kind == "sum":
            return torch.nn.functional.mse_loss(unet(x_t, log_snr, embeds, mask, None, None, drop),
                                                D.training_target(objective, x0, eps, log_snr), reduction="sum")
        if kind == "t_input":
            return torch.nn.functional.mse_loss(unet(x_t, t, embeds, mask, None, None, drop),
                                                D.training_target(objective, x0, eps, log_snr))
        if kind == "eps_target":
            return torch.nn.functional.mse_loss(unet(x_t, log_snr, embeds, mask, None, None, drop), eps)
        if kind == "item":
            return torch.nn.functional.mse_loss(unet(x_t, log_snr, embeds, mask, None, None, drop),
                                                D.training_target(objective, x0, eps, log_snr)).item()
        pred = unet(x_t, log_snr, embeds, mask, None, None, None if kind == "no_drop" else drop)
        target = {"neg_v": sigma * x0 - alpha * eps, "x0": x0}.get(kind, D.training_target(objective, x0, eps, log_snr))
        return torch.nn.functional.mse_loss(pred, target)
    return loss


def test_training_loss_check():
    from minimagen.exercises import base_loss, check_training_loss
    for right in (base_loss, my_training_loss, loss_mask_instead_of_drop):
        assert check_training_loss(right) is right
    with pytest.raises(NotImplementedError):
        check_training_loss(_stub)
    for kind, hint in (("no_drop", "no caption was dropped"), ("zeros", "not zero embeddings"),
                       ("neg_v", "opposite sign"), ("x0", "not with x0"), ("no_broadcast", r"\[B, 1, 1, 1\]"),
                       ("item", "not .item()"), ("inverted", "not the others"), ("order", "t first, then eps"),
                       ("sum", "not the sum"), ("t_input", "not t itself"), ("eps_target", "follow the objective")):
        with pytest.raises(ExerciseError, match=hint):
            check_training_loss(_wrong_loss(kind))


def _my_ddim(model_fn, shape, steps, objective="v", generator=None, mistake=None):
    x = torch.randn(shape) if mistake == "global_rng" else torch.randn(shape, generator=generator)
    log_snrs = D.sampling_log_snrs(steps)
    for i in range(steps):
        lam_t, lam_s = log_snrs[i].expand(shape[0]), log_snrs[i + 1].expand(shape[0])
        pred = model_fn(x, lam_t)
        x0 = pred if mistake == "no_convert" else D.prediction_to_x0(objective, pred, x, lam_t)
        if mistake != "no_threshold":
            x0 = D.threshold(x0, "dynamic")
        if i == steps - 1 and mistake != "extra_step":
            return x0
        x = D.ddim_step(x, x0, lam_t, lam_s, 0.0)
    return x


def test_ddim_sample_check():
    from minimagen.exercises import check_ddim_sample, ddim_sample
    assert check_ddim_sample(ddim_sample) is ddim_sample
    check_ddim_sample(_my_ddim)
    with pytest.raises(NotImplementedError):
        check_ddim_sample(_stub)
    for mistake, hint in (("no_threshold", "threshold every x0-hat"), ("extra_step", "not one more ddim_step"),
                          ("no_convert", "prediction_to_x0"), ("global_rng", "generator=generator")):
        with pytest.raises(ExerciseError, match=hint):
            check_ddim_sample(lambda *a, m=mistake: _my_ddim(*a, mistake=m))
    with pytest.raises(ExerciseError, match=r"\[B\]"):  # a scalar log-SNR
        check_ddim_sample(lambda f, shape, steps, obj, g: f(torch.randn(shape, generator=g), torch.tensor(0.0)))


def test_chance_check():
    from minimagen.exercises import check_chance, rotated_chance
    from minimagen.metrics import alignment_accuracy
    assert check_chance(rotated_chance) is rotated_chance
    with pytest.raises(NotImplementedError):
        check_chance(_stub)
    for wrong, hint in ((lambda x, c: alignment_accuracy(x, c), "their own captions"),
                        (lambda x, c: 100 * rotated_chance(x, c), "not a percentage"),
                        (lambda x, c: alignment_accuracy(x, c[-1:] + c[:-1]), "other way"),
                        (lambda x, c: 0.3, r"captions\[\(i \+ 1\) % n\]")):  # a constant guess
        with pytest.raises(ExerciseError, match=hint):
            check_chance(wrong)


def test_per_pair_check():
    from minimagen.exercises import check_per_pair, per_pair_alignment
    from minimagen.metrics import caption_alignment
    assert check_per_pair(per_pair_alignment) is per_pair_alignment
    with pytest.raises(NotImplementedError):
        check_per_pair(_stub)

    def first_pair_only(images, captions, pairs):  # a caption counts only for the first pair it names
        scores, groups = caption_alignment(images, captions), {}
        for k, c in enumerate(captions):
            pair = next((p for p in pairs if p in c), None)
            if pair:
                groups.setdefault(pair, []).append(scores[k].item())
        return {p: sum(v) / len(v) for p, v in groups.items()}

    def every_pair(images, captions, pairs):  # keeps pairs no caption names
        return {**{p: 0.0 for p in pairs}, **per_pair_alignment(images, captions, pairs)}

    for wrong, hint in ((first_pair_only, "counts for both"), (every_pair, "leave out a pair"),
                        (lambda *a: {p: 100 * v for p, v in per_pair_alignment(*a).items()}, "not percentages")):
        with pytest.raises(ExerciseError, match=hint):
            check_per_pair(wrong)


def test_guided_x0_check():
    from minimagen.exercises import check_guided_x0, guided_x0

    def stub(model_fn, x_t, log_snr, w, method, objective):
        raise NotImplementedError

    def guide(pc, pu, w):
        return pu + w * (pc - pu)

    def threshold_first(model_fn, x_t, log_snr, w, method, objective):  # thresholds each x0-hat, then guides
        c, u = (D.threshold(D.prediction_to_x0(objective, model_fn(x_t, log_snr, t), x_t, log_snr), method) for t in (True, False))
        return guide(c, u, w)

    def w_on_uncond(model_fn, x_t, log_snr, w, method, objective):
        pc, pu = model_fn(x_t, log_snr, True), model_fn(x_t, log_snr, False)
        return D.threshold(D.prediction_to_x0(objective, pc + w * (pu - pc), x_t, log_snr), method)

    def paper_form(model_fn, x_t, log_snr, w, method, objective):  # (1 + w) pc - w pu: w = 1 is not plain conditional
        pc, pu = model_fn(x_t, log_snr, True), model_fn(x_t, log_snr, False)
        return D.threshold(D.prediction_to_x0(objective, pc + w * (pc - pu), x_t, log_snr), method)

    def no_conversion(model_fn, x_t, log_snr, w, method, objective):
        return D.threshold(guide(model_fn(x_t, log_snr, True), model_fn(x_t, log_snr, False), w), method)

    def always_static(model_fn, x_t, log_snr, w, method, objective):
        pred = guide(model_fn(x_t, log_snr, True), model_fn(x_t, log_snr, False), w)
        return D.static_threshold(D.prediction_to_x0(objective, pred, x_t, log_snr))

    def convert_each_then_guide(model_fn, x_t, log_snr, w, method, objective):  # right: the conversion is affine
        c, u = (D.prediction_to_x0(objective, model_fn(x_t, log_snr, t), x_t, log_snr) for t in (True, False))
        return D.threshold(guide(c, u, w), method)

    check_guided_x0(guided_x0)
    check_guided_x0(convert_each_then_guide)
    with pytest.raises(NotImplementedError):
        check_guided_x0(stub)
    for wrong, hint in ((threshold_first, "threshold comes after guidance"), (w_on_uncond, "w multiplies the difference"),
                        (paper_form, "w = 1 must give the plain conditional"), (no_conversion, "prediction_to_x0"),
                        (always_static, "the threshold the method names")):
        with pytest.raises(ExerciseError, match=hint):
            check_guided_x0(wrong)


def test_down_up_check():
    import torch.nn.functional as F

    from minimagen.exercises import check_down_up
    from minimagen.imagen import down_up

    def stub(images, low_size):
        raise NotImplementedError

    def round_trip(down_mode="bilinear", up_mode="bilinear", antialias=True, back=True):
        def fn(images, low_size):
            corners = None if down_mode == "nearest" else False
            low = F.interpolate(images, size=(low_size, low_size), mode=down_mode, antialias=antialias,
                                align_corners=corners)
            size = images.shape[-1] if back else low_size
            return F.interpolate(low, size=(size, size), mode=up_mode, align_corners=None if up_mode == "nearest" else False)
        return fn

    check_down_up(down_up)
    check_down_up(round_trip())  # the notebook's solution
    with pytest.raises(NotImplementedError):
        check_down_up(stub)
    for wrong, hint in ((round_trip(antialias=False), "antialias=True"), (round_trip(up_mode="nearest"), "going up"),
                        (round_trip("nearest", "nearest", antialias=False), "both ways"),
                        (round_trip(back=False), "enlarge the small"), (lambda images, low_size: images, "interpolate")):
        with pytest.raises(ExerciseError, match=hint):
            check_down_up(wrong)


def test_upsample_and_augment_check():
    from minimagen import diffusion as D
    from minimagen.exercises import check_upsample_and_augment
    from minimagen.imagen import noise_augment, resize, upsample_and_augment

    def stub(lowres, size, aug_level, generator):
        raise NotImplementedError

    def solution(lowres, size, aug_level, generator):  # the notebook's solution
        up = resize(lowres, size)
        log_snr = D.get_schedule("cosine")(aug_level)
        alpha, sigma = (a.view(-1, 1, 1, 1) for a in D.alpha_sigma(log_snr))
        noise = torch.randn(up.shape, generator=generator)
        clean = (aug_level <= 0).view(-1, 1, 1, 1)
        return torch.where(clean, up, alpha * up + sigma * noise), log_snr

    def by_hand(z_of, log_snr_of=lambda level: D.get_schedule("cosine")(level)):
        def fn(lowres, size, aug_level, generator):
            up = resize(lowres, size)
            return z_of(up, aug_level.view(-1, 1, 1, 1), torch.randn(up.shape, generator=generator)), log_snr_of(aug_level)
        return fn

    right_z = lambda up, lv, eps: torch.where(lv <= 0, up, D.q_sample(up, D.cosine_log_snr(lv.flatten()), eps))
    check_upsample_and_augment(upsample_and_augment)
    check_upsample_and_augment(solution)
    check_upsample_and_augment(by_hand(right_z))
    with pytest.raises(NotImplementedError):
        check_upsample_and_augment(stub)
    noise_first = lambda lowres, size, level, generator: (resize(noise_augment(lowres, level, generator=generator)[0], size),
                                                         D.cosine_log_snr(level))
    for wrong, hint in ((noise_first, "after upsampling"),
                        (by_hand(lambda up, lv, eps: up + lv * eps), "not the noise std"),
                        (by_hand(lambda up, lv, eps: (1 - lv ** 2).sqrt() * up + lv * eps), "not sigma"),
                        (by_hand(lambda up, lv, eps: D.q_sample(up, D.cosine_log_snr(lv.flatten()), eps)), "untouched"),
                        (by_hand(right_z, lambda level: level), "not the level itself"),
                        (by_hand(right_z, lambda level: D.cosine_log_snr(level) / 2), "the log-SNR the U-Net is told"),
                        (lambda lowres, size, level, generator: noise_augment(lowres, level, generator=generator),
                         "resize\\(lowres, size\\)"),
                        (lambda lowres, size, level, generator: noise_augment(resize(lowres, size), level), "draw the noise"),
                        (lambda lowres, size, level, generator: resize(lowres, size), "return two things")):
        with pytest.raises(ExerciseError, match=hint):
            check_upsample_and_augment(wrong)


def test_first_drop_check():
    from minimagen.exercises import check_first_drop, first_drop

    def stub(rows, drop=0.1):
        raise NotImplementedError

    def reading(reference="zero", pick=min, fixed=None):
        def fn(rows, drop=0.1):
            base = max(r["alignment"] for r in rows) if reference == "best" else rows[0]["alignment"]
            lower = [r["aug_level"] for r in rows if r["alignment"] < base - (fixed or drop)]
            return pick(lower) if lower else None
        return fn

    check_first_drop(first_drop)
    check_first_drop(reading())
    with pytest.raises(NotImplementedError):
        check_first_drop(stub)
    for wrong, hint in ((reading("best"), "not from the best level"), (reading(pick=max), "lowest such level"),
                        (reading(fixed=0.1), "use the drop argument"),
                        (lambda rows, drop=0.1: 0.0 if reading()(rows, drop) is None else reading()(rows, drop),
                         "return None")):
        with pytest.raises(ExerciseError, match=hint):
            check_first_drop(wrong)


def test_parameter_shares_check():
    from minimagen.exercises import check_parameter_shares, parameter_shares

    def stub(unets):
        raise NotImplementedError

    def tensors(unets):  # counts parameter tensors, not their elements
        n = [len(list(u.parameters())) for u in unets]
        return [x / sum(n) for x in n]

    def percent(unets):
        return [100 * s for s in parameter_shares(unets)]

    def over_base(unets):
        n = [sum(p.numel() for p in u.parameters()) for u in unets]
        return [x / n[0] for x in n]

    check_parameter_shares(parameter_shares)
    with pytest.raises(NotImplementedError):
        check_parameter_shares(stub)
    for wrong, hint in ((tensors, "not parameter tensors"), (percent, "not percentages"), (over_base, "sum to 1")):
        with pytest.raises(ExerciseError, match=hint):
            check_parameter_shares(wrong)


def test_flops_per_call_check():
    from torch.utils.flop_counter import FlopCounterMode

    from minimagen.exercises import check_flops_per_call, flops_per_call

    def stub(model, k):
        raise NotImplementedError

    def count(model, k, batch=1, size=None, lowres=True):
        size = size or model.image_sizes[k]
        embeds, mask = model.text_encoder.encode(["a red circle"] * batch)
        x = torch.zeros(batch, 3, size, size)
        extra = (torch.zeros_like(x), torch.zeros(batch)) if lowres and model.lowres_sizes[k] is not None else (None, None)
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model.unets[k](x, torch.zeros(batch), embeds, mask, *extra)
        return counter.get_total_flops()

    def guided_batch(model, k):  # counts the conditional and unconditional halves of a guided call
        return count(model, k, batch=2)

    def gflops(model, k):
        return count(model, k) / 1e9

    def base_size(model, k):  # the same x for every stage
        return count(model, k, size=model.image_sizes[0])

    def no_lowres(model, k):
        return count(model, k, lowres=False)

    check_flops_per_call(flops_per_call)
    with pytest.raises(NotImplementedError):
        check_flops_per_call(stub)
    for wrong, hint in ((guided_batch, "one image"), (gflops, "not GFLOPs"), (base_size, "at its own size"),
                        (no_lowres, "lowres of that size")):
        with pytest.raises(ExerciseError, match=hint):
            check_flops_per_call(wrong)


def test_try_cascade_check():
    from minimagen.errors import MinimagenError
    from minimagen.exercises import check_try_cascade, try_cascade
    from minimagen.notebook import load_toy_cascade

    def stub(stages):
        raise NotImplementedError

    def uncaught(stages):
        load_toy_cascade(stages=stages, device="cpu")

    def always_none(stages):
        try:
            load_toy_cascade(stages=stages, device="cpu")
        except MinimagenError:
            pass

    check_try_cascade(try_cascade)
    with pytest.raises(NotImplementedError):
        check_try_cascade(stub)
    for wrong, hint in ((uncaught, "catch it"), (always_none, "return the error's message")):
        with pytest.raises(ExerciseError, match=hint):
            check_try_cascade(wrong)


# ---------------------------------------------------------------- attempt: a wrong answer never stops Run All
def test_attempt_runs_the_learners_function_only_when_it_passes(capsys):
    """The stub, a wrong answer and a crashing answer each fall back to the reference, the last two behind a banner
    that names the failure; a right answer is what the notebook runs from then on. attempt never raises."""
    def crashing(x0, p, cap):
        return x0.clamp(-1, 1).view(3)  # a shape error inside the learner's code

    def right(x0, p, cap):
        return D.dynamic_threshold(x0, p, cap)

    assert attempt("1", stub, check_dynamic_threshold, D.dynamic_threshold) is D.dynamic_threshold
    assert "not written yet" in capsys.readouterr().out
    for bad, why in ((no_floor, "s must be at least 1"), (static, "differs from dynamic thresholding"),
                     (crashing, "RuntimeError")):
        assert attempt("1", bad, check_dynamic_threshold, D.dynamic_threshold) is D.dynamic_threshold
        out = capsys.readouterr().out
        assert "YOUR FUNCTION FAILED" in out and why in out
    assert attempt("1", right, check_dynamic_threshold, D.dynamic_threshold) is right
    assert "your answer passes" in capsys.readouterr().out
