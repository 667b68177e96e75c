"""A perfect denoiser: the exact posterior mean over a finite set of images, for experiments without training.

If the data is a finite set {x_i} with captions {c_i}, the best possible x_0 prediction from a noisy
x_t = alpha x_0 + sigma eps is the posterior mean [Tweedie; Karras et al. 2022, Eq. 57 for a finite set]:

    E[x_0 | x_t, c] = sum_i w_i x_i,   w_i = softmax_i( -||x_t - alpha x_i||^2 / (2 sigma^2) )  over the i with c_i = c

and the unconditional prediction is the same sum over every i. A trained model can only approximate this;
guiding and thresholding the exact one shows what the *data* makes a rule do, with no model error in the way.
`model_fn` plugs it into `diffusion.sample_loop` with objective "x0", so the sampler, the guidance and the
thresholding are the package's own (or the learner's, through `guided_x0`).
"""
import torch

from . import diffusion as D


class ExactDenoiser:
    """images [N, C, H, W] in [-1, 1] with integer labels [N] (one per caption); chunked over the batch."""

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

    def model_fn(self, labels, guidance_scale: float, guided_x0=None):
        """model_fn(x_t, log_snr) for sample_loop(..., objective="x0"): the guided x_0 prediction
        x0_uncond + w (x0_cond - x0_uncond) [Imagen Eq. 2], or guided_x0(cond, uncond, w) if given."""
        guide = guided_x0 or D.classifier_free_guidance
        return lambda x_t, log_snr: guide(self.x0(x_t, log_snr, labels), self.x0(x_t, log_snr), guidance_scale)

    def nearest(self, samples):
        """Index [B] of the data image nearest to each sample (L2)."""
        return torch.cdist(samples.float().flatten(1), self.images).argmin(1)
