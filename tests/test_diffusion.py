"""Closed-form checks of the diffusion core (minimagen/diffusion.py)."""
import math

import pytest
import torch

from minimagen import diffusion as D
from minimagen.checks import check_sampling_args
from minimagen.errors import MinimagenError

T = torch.linspace(0, 1, 101)


@pytest.mark.parametrize("name", ["cosine", "linear"])
def test_schedule_is_variance_preserving_and_monotone(name):
    log_snr = D.get_schedule(name)(T)
    alpha, sigma = D.alpha_sigma(log_snr)
    torch.testing.assert_close(alpha**2 + sigma**2, torch.ones_like(alpha))
    assert (log_snr[1:] < log_snr[:-1]).all(), "log-SNR must decrease from data (t=0) to noise (t=1)"
    assert log_snr[0] > 5 and log_snr[-1] < -10  # nearly clean at t=0, nearly pure noise at t=1


def test_cosine_schedule_matches_alpha_bar_formula():
    t = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    alpha_bar = torch.cos(torch.pi / 2 * (t + 0.008) / 1.008) ** 2  # Nichol & Dhariwal Eq. 17
    alpha, _ = D.alpha_sigma(D.cosine_log_snr(t))
    torch.testing.assert_close(alpha**2, alpha_bar)


def test_q_sample_mean_and_variance_by_monte_carlo():
    g = torch.Generator().manual_seed(0)
    x0 = torch.full((200_000, 1, 1, 1), 0.7)
    log_snr = torch.full((200_000,), 0.3)
    x_t = D.q_sample(x0, log_snr, torch.randn(x0.shape, generator=g))
    alpha, sigma = D.alpha_sigma(torch.tensor(0.3))
    assert abs(x_t.mean() - alpha * 0.7) < 0.01
    assert abs(x_t.var() - sigma**2) < 0.01


def test_parameterisation_round_trips():
    g = torch.Generator().manual_seed(1)
    x0, eps = torch.randn(4, 3, 8, 8, generator=g), torch.randn(4, 3, 8, 8, generator=g)
    log_snr = torch.tensor([-3.0, -0.5, 1.0, 4.0])
    x_t = D.q_sample(x0, log_snr, eps)
    torch.testing.assert_close(D.predict_x0_from_eps(x_t, log_snr, eps), x0, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(D.predict_eps_from_x0(x_t, log_snr, x0), eps, atol=1e-4, rtol=1e-4)
    v = D.v_target(x0, eps, log_snr)
    torch.testing.assert_close(D.predict_x0_from_v(x_t, log_snr, v), x0, atol=1e-5, rtol=1e-5)
    for objective in D.OBJECTIVES:
        target = D.training_target(objective, x0, eps, log_snr)
        torch.testing.assert_close(D.prediction_to_x0(objective, target, x_t, log_snr), x0, atol=1e-4, rtol=1e-4)


def test_posterior_matches_bayes_formula():
    """q(x_s | x_t, x0) ∝ q(x_t | x_s) q(x_s | x0): multiply the two Gaussians independently."""
    g = torch.Generator().manual_seed(2)
    x0, x_t = torch.randn(3, 1, 4, 4, generator=g, dtype=torch.float64), torch.randn(3, 1, 4, 4, generator=g, dtype=torch.float64)
    lt, ls = torch.tensor([-2.0, 0.0, 3.0], dtype=torch.float64), torch.tensor([-1.0, 1.5, 3.5], dtype=torch.float64)
    (a_t, s_t), (a_s, s_s) = D.alpha_sigma(lt), D.alpha_sigma(ls)
    a_ts = a_t / a_s                      # q(x_t | x_s) = N(a_ts x_s, s2_ts)
    s2_ts = s_t**2 - a_ts**2 * s_s**2
    precision = 1 / s_s**2 + a_ts**2 / s2_ts
    var = 1 / precision
    mean = var.view(-1, 1, 1, 1) * ((a_s / s_s**2).view(-1, 1, 1, 1) * x0 + (a_ts / s2_ts).view(-1, 1, 1, 1) * x_t)
    got_mean, got_var = D.q_posterior(x0, x_t, lt, ls)
    torch.testing.assert_close(got_mean, mean)
    torch.testing.assert_close(got_var.flatten(), var)


def test_ddim_with_eta_one_is_the_ancestral_step():
    g = torch.Generator().manual_seed(3)
    x0, x_t, z = (torch.randn(2, 3, 4, 4, generator=g) for _ in range(3))
    lt, ls = torch.tensor([-1.0, 2.0]), torch.tensor([0.5, 3.0])
    torch.testing.assert_close(D.ddim_step(x_t, x0, lt, ls, z, eta=1.0), D.ddpm_step(x_t, x0, lt, ls, z), atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------- thresholding
def test_static_threshold_is_clamp():
    x = torch.randn(5, 3, 4, 4) * 3
    torch.testing.assert_close(D.threshold(x, "static"), x.clamp(-1, 1))


def test_dynamic_threshold_leaves_in_range_samples_unchanged():
    x = torch.rand(4, 3, 8, 8) * 2 - 1
    torch.testing.assert_close(D.threshold(x, "dynamic"), x)


def test_seed_worked_example_stays_distinct():
    """{0.2, 0.4, 0.6, 0.8} x 7.5: static clipping maps all four to 1, dynamic keeps their order."""
    x = (torch.tensor([0.2, 0.4, 0.6, 0.8]) * 7.5).view(1, 1, 2, 2)
    assert (D.static_threshold(x) == 1).all()
    out = D.dynamic_threshold(x, 0.995, cap=None).flatten()  # the paper's uncapped rule
    assert (out.abs() <= 1).all() and (out[1:] > out[:-1]).all()
    torch.testing.assert_close(out[:3], torch.tensor([1.5, 3.0, 4.5]) / torch.quantile(x.flatten(), 0.995))


def test_cap_bounds_s_and_cap_one_is_static_clipping():
    """s = clamp(quantile, 1, cap): values inside [-cap, cap] are divided by cap and keep their order,
    the rest are clipped; cap = 1 is exactly static clipping; a large cap is the uncapped rule."""
    x = torch.tensor([0.3, 0.9, 1.2, 1.4, 3.0, 15.0]).view(1, 1, 2, 3)
    assert D.dynamic_threshold_scale(x, 0.995, cap=None).item() > 14
    assert D.dynamic_threshold_scale(x, 0.995, cap=1.5).item() == 1.5
    torch.testing.assert_close(D.dynamic_threshold(x, 0.995, cap=1.5).flatten(),
                               torch.tensor([0.2, 0.6, 0.8, 1.4 / 1.5, 1.0, 1.0]))
    torch.testing.assert_close(D.dynamic_threshold(x, 0.995, cap=1.0), D.static_threshold(x))
    torch.testing.assert_close(D.dynamic_threshold(x, 0.995, cap=1e9), D.dynamic_threshold(x, 0.995, cap=None))
    small = torch.rand(2, 3, 4, 4) * 2 - 1  # inside [-1, 1]: s = 1 with or without a cap
    torch.testing.assert_close(D.dynamic_threshold(small, 0.9, cap=1.5), small)


@pytest.mark.parametrize("bad", [0.5, 0.0, -1, float("nan"), float("inf"), "2"])
def test_bad_cap_names_the_fix(bad):
    """The diffusion functions are pure maths: a rule is checked once, when it is made."""
    with pytest.raises(MinimagenError, match="cap must be None"):
        D.Thresholding("dynamic", 0.95, bad)


def test_a_thresholding_is_one_value_with_a_label():
    """Thresholding folds method, p and cap into one object: called on x_0 it is the rule; a name means the
    default p and cap; the published settings are named."""
    x = torch.randn(3, 3, 8, 8) * 4
    torch.testing.assert_close(D.Thresholding()(x), D.dynamic_threshold(x, 0.9, 1.5))
    torch.testing.assert_close(D.threshold(x, "dynamic"), D.DEFAULT_THRESHOLDING(x))
    torch.testing.assert_close(D.IMAGEN_THRESHOLDING(x), D.dynamic_threshold(x, 0.995, None))
    torch.testing.assert_close(D.Thresholding("none")(x), x)
    assert [D.as_thresholding(r).label for r in ("static", "dynamic", D.IMAGEN_THRESHOLDING, D.IF_THRESHOLDING)] == [
        "static", "dynamic p=0.9 cap=1.5", "dynamic p=0.995 uncapped", "dynamic p=0.95 cap=1.5"]
    own = lambda x0: x0.clamp(-2, 2)
    assert D.as_thresholding(own) is own and D.Thresholding("static") == D.as_thresholding("static")


def test_dynamic_threshold_is_per_sample():
    x = torch.rand(2, 3, 8, 8) * 2 - 1
    outlier = x.clone()
    outlier[1] *= 50  # a wild second sample must not rescale the first
    out = D.dynamic_threshold(outlier, 0.9, None)
    torch.testing.assert_close(out[0], x[0])
    assert out[1].abs().max() <= 1


def test_dynamic_threshold_quantile_in_float32_under_bf16():
    x = (torch.randn(2, 3, 16, 16) * 4).bfloat16()
    out = D.threshold(x, "dynamic")
    assert out.dtype == torch.bfloat16 and out.abs().max() <= 1


@pytest.mark.parametrize("bad", [0.0, -0.1, 1.5])
def test_bad_percentile_names_the_range(bad):
    with pytest.raises(MinimagenError, match=r"\(0, 1\]"):
        D.Thresholding("dynamic", bad, None)


def test_unknown_thresholding_lists_the_valid_ones():
    with pytest.raises(MinimagenError, match="static"):
        D.threshold(torch.ones(1, 1), "clip")
    with pytest.raises(MinimagenError, match="static"):
        check_sampling_args(10, "ddim", "clip")


# ---------------------------------------------------------------- guidance
def test_guidance_endpoints():
    cond, uncond = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    torch.testing.assert_close(D.classifier_free_guidance(cond, uncond, 1.0), cond)
    torch.testing.assert_close(D.classifier_free_guidance(cond, uncond, 0.0), uncond)
    torch.testing.assert_close(D.classifier_free_guidance(cond, uncond, 3.0), uncond + 3 * (cond - uncond))


# ---------------------------------------------------------------- samplers with an oracle model
def gaussian_oracle(mu, std):
    """Exact E[eps | x_t] when x0 ~ N(mu, std^2) per pixel: eps = sigma (x_t - alpha mu) / (alpha^2 std^2 + sigma^2)."""
    def model_fn(x_t, log_snr):
        alpha, sigma = (D._bcast(v, x_t) for v in D.alpha_sigma(log_snr))
        return sigma * (x_t - alpha * mu) / (alpha**2 * std**2 + sigma**2)
    return model_fn


@pytest.mark.parametrize("sampler,steps", [("ddim", 50), ("ddpm", 200), ("karras", 25)])
def test_samplers_recover_a_gaussian_data_distribution(sampler, steps):
    g = torch.Generator().manual_seed(4)
    out = D.sample_loop(gaussian_oracle(0.3, 0.2), (4096, 1, 1, 1), steps=steps, sampler=sampler,
                        thresholding="none", generator=g)
    assert abs(out.mean() - 0.3) < 0.02
    assert abs(out.std() - 0.2) < 0.02


@pytest.mark.parametrize("sampler", ["ddim", "ddpm", "karras"])
@pytest.mark.parametrize("schedule", ["cosine", "linear"])
def test_samplers_recover_a_single_image(sampler, schedule):
    image = torch.rand(1, 3, 8, 8) * 2 - 1
    model_fn = gaussian_oracle(image, 0.0)  # std 0: x0 is that image
    out = D.sample_loop(model_fn, (2, 3, 8, 8), steps=25, sampler=sampler, schedule=schedule,
                        thresholding="static", generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(out, image.expand(2, -1, -1, -1), atol=1e-3, rtol=0)


@pytest.mark.parametrize("sampler", ["ddim", "karras"])
@pytest.mark.parametrize("objective", ["eps", "v", "x0"])
def test_sampler_respects_objective(objective, sampler):
    image = torch.rand(1, 3, 4, 4) * 2 - 1
    oracle = gaussian_oracle(image, 0.0)

    def model_fn(x_t, log_snr):  # same oracle, expressed in another parameterisation
        eps = oracle(x_t, log_snr)
        return D.training_target(objective, D.predict_x0_from_eps(x_t, log_snr, eps), eps, log_snr)
    out = D.sample_loop(model_fn, (1, 3, 4, 4), steps=20, sampler=sampler, objective=objective, thresholding="none",
                        generator=torch.Generator().manual_seed(6))
    torch.testing.assert_close(out, image, atol=1e-3, rtol=0)


def test_ddim_eta_zero_is_deterministic_and_seeded():
    model_fn = gaussian_oracle(0.1, 0.5)
    run = lambda seed, **kw: D.sample_loop(model_fn, (3, 1, 4, 4), steps=10, generator=torch.Generator().manual_seed(seed), **kw)
    assert torch.equal(run(7), run(7))
    assert not torch.equal(run(7), run(8))
    assert torch.equal(run(7, sampler="ddpm"), run(7, sampler="ddpm"))
    assert torch.equal(run(7, sampler="karras"), run(7, sampler="karras"))
    assert not torch.equal(run(7, sampler="karras"), run(8, sampler="karras"))


def test_callback_sees_every_step():
    seen = []
    D.sample_loop(gaussian_oracle(0.0, 0.5), (1, 1, 2, 2), steps=7,
                  callback=lambda i, log_snr, x, x0_raw, x0: seen.append(i))
    assert seen == list(range(7))


@pytest.mark.parametrize("kwargs,match", [({"steps": 0}, "positive"), ({"sampler": "euler"}, "karras"),
                                          ({"thresholding": "soft"}, "dynamic")])
def test_sampler_argument_errors(kwargs, match):
    settings = {"steps": 10, "sampler": "ddim", "thresholding": "dynamic", **kwargs}
    with pytest.raises(MinimagenError, match=match):
        check_sampling_args(settings["steps"], settings["sampler"], settings["thresholding"])
    if "steps" not in kwargs:  # an unknown name is refused by sample_loop too (it would otherwise run DDIM)
        with pytest.raises(MinimagenError, match=match):
            D.sample_loop(gaussian_oracle(0.0, 0.5), (1, 1, 2, 2), **kwargs)


# ---------------------------------------------------------------- Karras (EDM) sampler
@pytest.mark.parametrize("steps", [1, 2, 18])
def test_karras_sigmas_endpoints_order_and_length(steps):
    sigmas = D.karras_sigmas(steps, 0.002, 80.0)
    assert sigmas.shape == (steps + 1,) and sigmas[-1] == 0  # EDM Eq. 5: t_N = 0
    torch.testing.assert_close(sigmas[0], torch.tensor(80.0))
    if steps > 1:
        torch.testing.assert_close(sigmas[-2], torch.tensor(0.002))
    assert (sigmas[1:] < sigmas[:-1]).all()


def test_karras_sigmas_are_evenly_spaced_in_sigma_to_the_one_over_rho():
    root = D.karras_sigmas(10, 0.01, 50.0, rho=7.0)[:-1].double() ** (1 / 7)
    torch.testing.assert_close(root.diff(), root.diff()[:1].expand(9), atol=1e-6, rtol=0)


def test_karras_calls_the_model_two_steps_minus_one_times_at_the_schedule_ends():
    """NFE = 2 * steps - 1, the callback once per step, and the noise levels stay inside the trained range:
    log-SNR from -2 log 80 (EDM's sigma_max) up to the schedule's t = 0."""
    oracle, levels, seen = gaussian_oracle(0.0, 0.5), [], []

    def model_fn(x_t, log_snr):
        levels.append(log_snr[0].item())
        return oracle(x_t, log_snr)
    D.sample_loop(model_fn, (2, 1, 2, 2), steps=6, sampler="karras",
                  callback=lambda i, log_snr, x, x0_raw, x0: seen.append(i))
    assert len(levels) == 11 and seen == list(range(6))
    assert abs(levels[0] - (-2 * math.log(80.0))) < 1e-4
    assert abs(levels[-1] - D.cosine_log_snr(torch.tensor(0.0)).item()) < 1e-4


def test_karras_is_second_order_on_the_exact_ode():
    """For x0 ~ N(mu, std^2) the probability-flow ODE has a closed form: x~(sigma) - mu scales with
    sqrt(std^2 + sigma^2). Heun's error must shrink ~4x when the steps double (Euler's only ~2x)."""
    mu, std = 0.3, 0.2
    sigma_min = math.exp(-D.cosine_log_snr(torch.tensor(0.0)).item() / 2)
    z = torch.randn((256, 1, 1, 1), generator=torch.Generator().manual_seed(4)).double()  # the sampler's first draw
    x_min = mu + (80 * z - mu) * math.sqrt(std**2 + sigma_min**2) / math.sqrt(std**2 + 80**2)
    exact = mu + std**2 / (std**2 + sigma_min**2) * (x_min - mu)  # last step: D(x~; sigma_min) = E[x0 | x~]
    errors = [(D.sample_loop(gaussian_oracle(mu, std), (256, 1, 1, 1), steps=steps, sampler="karras",
                             thresholding="none", generator=torch.Generator().manual_seed(4)).double() - exact).abs().max()
              for steps in (10, 20)]
    assert errors[1] < 0.05 and errors[0] / errors[1] > 3.5


# ---------------------------------------------------------------- after Imagen: rescale, projected, interval guidance
def test_guidance_variants_against_closed_forms():
    g = torch.Generator().manual_seed(3)
    c, u = torch.randn(2, 3, 4, 4, generator=g), torch.randn(2, 3, 4, 4, generator=g)
    cfg = D.classifier_free_guidance(c, u, 7.0)
    assert torch.allclose(D.cfg_rescale(c, u, 7.0, phi=0.0), cfg, atol=1e-6)          # phi = 0: plain guidance
    full = D.cfg_rescale(c, u, 7.0, phi=1.0)                                          # phi = 1: the conditional's std
    assert torch.allclose(full.flatten(1).std(1), c.flatten(1).std(1), atol=1e-5)
    assert torch.allclose(D.projected_guidance(c, u, 7.0, eta=1.0), cfg, atol=1e-5)   # eta = 1: plain guidance
    update = D.projected_guidance(c, u, 7.0, eta=0.0) - c                           # eta = 0: orthogonal to x_c
    assert (update * c).flatten(1).sum(1).abs().max() < 1e-4
    t = torch.tensor([0.1, 0.5, 0.9])
    assert torch.allclose(D.t_from_log_snr(D.cosine_log_snr(t)), t, atol=1e-5)
    c3, u3 = torch.randn(3, 2, generator=g), torch.randn(3, 2, generator=g)
    out = D.interval_guidance(c3, u3, 7.0, D.cosine_log_snr(t))
    assert torch.allclose(out[0], c3[0]) and torch.allclose(out[2], c3[2])           # outside (0.2, 0.8): w = 1
    assert torch.allclose(out[1], u3[1] + 7.0 * (c3[1] - u3[1]))
