"""unmix stage 2: a mixture encoder matched to a stage-1 stem encoder (reference/jukebox.md §6.5).

jaxsep train --config configs/vqvae_stage2.py[:tiny] --workdir runs/vocals_s2 --data ROOT \
    --config.stem=vocals --config.stem_model=runs/vocals_s1/model [--config.init_checkpoint=stem_model]
"""

from jaxsep.recipes.jukebox_unmix import default_config, tiny_schedule


def get_config(arg=None):
    config = default_config()
    config.stage = 2
    config.num_steps = 120_000
    if arg == "tiny":  # the architecture comes from the stage-1 model directory
        config = tiny_schedule(config)
    elif arg not in (None, "paper"):
        raise ValueError(f"unknown variant {arg!r} (paper, tiny)")
    return config
