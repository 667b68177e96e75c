"""minimagen: Imagen (Saharia et al., 2022) in miniature — cascaded pixel-space diffusion
conditioned on a frozen T5 text encoder, small enough to read and to train on a laptop CPU."""

__version__ = "0.1.0"
