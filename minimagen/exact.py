"""A perfect denoiser: the exact posterior mean over a finite set of images, for experiments without training.

If the data is a finite set {x_i} with captions {c_i}, the best possible x_0 prediction from a noisy
x_t = alpha x_0 + sigma eps is the posterior mean [Tweedie; Karras et al. 2022, Eq. 57 for a finite set]:

    E[x_0 | x_t, c] = sum_i w_i x_i,   w_i = softmax_i( -||x_t - alpha x_i||^2 / (2 sigma^2) )  over the i with c_i = c

and the unconditional prediction is the same sum over every i. A trained model can only approximate this;
guiding and thresholding the exact one shows what the *data* makes a rule do, with no model error in the way.
`model_fn` plugs it into `diffusion.sample_loop` with objective "x0", so the sampler, the guidance and the
thresholding are the package's own (or the learner's: `text_model_fn` answers notebook 07's guided x0-hat).
"""
import random

import torch

from . import data
from . import diffusion as D


class ExactDenoiser:
    """images [N, C, H, W] in [-1, 1] with integer labels [N] (one per caption). Every call compares the batch
    with all N images at once ([B, N] logits): meant for sets of hundreds, not a dataset."""

    def __init__(self, images: torch.Tensor, labels):
        self.images = images.float().flatten(1)  # [N, D]
        self.labels = torch.as_tensor(labels)
        self.shape = tuple(images.shape[1:])

    def x0(self, x_t, log_snr, labels=None):
        """The posterior mean [B, C, H, W] given x_t [B, C, H, W] and log-SNR [B]; labels [B] restricts each
        sample's sum to its caption's images (None: over every image, the unconditional prediction)."""
        alpha, sigma = (v[:, None] for v in D.alpha_sigma(log_snr.float()))
        x = x_t.float().flatten(1)
        # ||x_t - alpha x_i||^2 = ||x_t||^2 - 2 alpha x_t.x_i + alpha^2 ||x_i||^2; the first term cancels in softmax
        logits = (2 * alpha * x @ self.images.T - alpha**2 * (self.images**2).sum(1)) / (2 * sigma**2)
        if labels is not None:
            logits = logits.masked_fill(self.labels[None, :] != torch.as_tensor(labels)[:, None], -torch.inf)
        return (logits.softmax(-1) @ self.images).reshape(x_t.shape)

    def text_model_fn(self, labels):
        """model_fn(x_t, log_snr, text) -> x_0: with the caption (text=True) or without it, as a U-Net with
        caption dropout answers (the interface of notebook 07's guided x0-hat)."""
        return lambda x_t, log_snr, text: self.x0(x_t, log_snr, labels if text else None)

    def model_fn(self, labels, guidance_scale: float, guided_x0=None):
        """model_fn(x_t, log_snr) for sample_loop(..., objective="x0"): the guided x_0 prediction
        x0_uncond + w (x0_cond - x0_uncond) [Imagen Eq. 2], or guided_x0(cond, uncond, w) if given."""
        guide = guided_x0 or D.classifier_free_guidance
        return lambda x_t, log_snr: guide(self.x0(x_t, log_snr, labels), self.x0(x_t, log_snr), guidance_scale)

    def nearest(self, samples):
        """Index [B] of the data image nearest to each sample (L2)."""
        return torch.cdist(samples.float().flatten(1), self.images).argmin(1)


def contrast_set(contrasts, n_captions: int = 6, seeds: int = 3, size: int = 32):
    """A finite contrast world for ExactDenoiser: renders of n one-object training captions x seeds x contrasts.
    -> (ExactDenoiser, each image's contrast [N], the captions)."""
    captions = random.Random(0).sample([c for c in data.all_captions("train") if len(c.split()) == 4], n_captions)
    images, labels, levels = [], [], []
    for k, caption in enumerate(captions):
        for seed in range(seeds):
            for c in contrasts:
                images.append(data.from_uint8(data.render(caption, size, seed=seed, contrast=float(c))))
                labels.append(k)
                levels.append(float(c))
    return ExactDenoiser(torch.stack(images), labels), torch.tensor(levels), captions


def full_frame_set(contrasts, size: int = 16):
    """Four grey full-frame patterns (two stripe directions, a diagonal, a checker of cosines), each at every
    contrast, clipped to [-1, 1]: the same continuum as the contrast world with no background, so guidance
    pushes the *whole* frame. -> (ExactDenoiser, each image's contrast [N])."""
    u = (torch.arange(size) / size)[None, :].expand(size, size)
    v = u.T
    cos = lambda a: torch.cos(2 * torch.pi * a)
    patterns = [cos(2 * u), cos(2 * v), cos(2 * (u + v)), cos(u) * cos(v)]
    images, labels, levels = [], [], []
    for k, pattern in enumerate(patterns):
        for c in contrasts:
            images.append((float(c) * pattern).clamp(-1, 1)[None])
            labels.append(k)
            levels.append(float(c))
    return ExactDenoiser(torch.stack(images), labels), torch.tensor(levels)


def guided_samples(exact, guidance_scale, thresholding, per_label: int = 4, steps: int = 25, seed: int = 0,
                   guided_x0=None, **kw):
    """Guided DDIM samples [per_label x labels, C, H, W] of the exact denoiser, the same noise for every rule;
    thresholding: a diffusion.Thresholding, a method name, or a function x0 -> x0. -> (samples, their labels)."""
    labels = torch.arange(int(exact.labels.max()) + 1).repeat_interleave(per_label)
    x = D.sample_loop(exact.model_fn(labels, guidance_scale, guided_x0), (len(labels), *exact.shape), steps=steps,
                      objective="x0", thresholding=thresholding, generator=torch.Generator().manual_seed(seed), **kw)
    return x, labels
