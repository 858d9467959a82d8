"""Fine-tuning a pre-trained ChimeraNet: whole model (default) or mask head only.

jaxsep train --config configs/chimera_finetune.py[:mask,chorale|fof,tiny] --workdir DIR --data ROOT \\
    --config.pretrained=PRETRAIN_DIR/model

Arguments are comma-separated tokens, see jaxsep.recipes.chimera_transfer.variant_config.
"""

from jaxsep.recipes.chimera_transfer import variant_config


def get_config(arg=None):
    return variant_config("finetune", arg)
