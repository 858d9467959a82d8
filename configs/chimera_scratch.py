"""From-scratch ChimeraNet baseline: pre-training + fine-tuning iterations on the target data.

jaxsep train --config configs/chimera_scratch.py[:chorale|fof,tiny] --workdir DIR --data ROOT

Arguments are comma-separated tokens, see jaxsep.recipes.chimera_transfer.variant_config.
"""

from jaxsep.recipes.chimera_transfer import variant_config


def get_config(arg=None):
    return variant_config("scratch", arg)
