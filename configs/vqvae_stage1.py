"""unmix stage 1: a level-0 Jukebox VQ-VAE on one stem (reference/jukebox.md §6.4).

jaxsep train --config configs/vqvae_stage1.py[:tiny] --workdir runs/vocals_s1 --data ROOT \
    --config.stem=vocals [--config.init_checkpoint=vqvae.pth.tar] [--config.codebook_update=frozen]
"""

from jaxsep.recipes.jukebox_unmix import default_config, tiny_schedule


def tiny(config):
    """Seconds on 2 CPU cores (tests): width 8 (x2), depth 1 (x2), 4096-sample chunks."""
    config = tiny_schedule(config)
    config.model.width = 8
    config.model.depth = 1
    config.model.l_bins = 256
    config.model.emb_width = 16
    config.bandwidth.chunks = 8
    return config


def get_config(arg=None):
    config = default_config()
    config.stage = 1
    if arg == "tiny":
        config = tiny(config)
    elif arg not in (None, "paper"):
        raise ValueError(f"unknown variant {arg!r} (paper, tiny)")
    return config
