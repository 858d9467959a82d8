"""Deep-clustering-only pre-training of ChimeraNet (alpha = 1) on a pop corpus.

jaxsep train --config configs/chimera_pretrain.py[:tiny,pitch,stretch,incoherent] --workdir DIR --data ROOT

Arguments are comma-separated tokens, see jaxsep.recipes.chimera_transfer.variant_config.
"""

from jaxsep.recipes.chimera_transfer import variant_config


def get_config(arg=None):
    return variant_config("pretrain", arg)
