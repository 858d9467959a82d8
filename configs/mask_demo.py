"""Small spectral mask model on a MUSDB18-HQ-layout corpus (the core's end-to-end demo).

jaxsep train --config configs/mask_demo.py[:tiny] --workdir runs/mask --data ROOT
"""

from jaxsep.recipes.mask_demo import default_config


def get_config(arg=None):
    config = default_config()
    if arg == "tiny":  # seconds on 2 CPU cores: for tests
        config.batch_size = 8
        config.num_steps = 6
        config.log_every = 2
        config.eval_every = 3
        config.checkpoint_every = 3
        config.data.seconds = 0.5
        config.data.eval_examples = 4
        config.model.hidden = 32
        config.model.n_fft = 512
        config.model.hop = 128
    elif arg not in (None, "base"):
        raise ValueError(f"unknown variant {arg!r} (base, tiny)")
    return config
