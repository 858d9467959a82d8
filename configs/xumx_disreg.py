"""X-UMX + VGGish, method 'disreg': the xumx_vggish recipe.

jaxsep train --config configs/xumx_disreg.py[:tiny] --workdir runs/xumx_disreg --data ROOT
"""

from jaxsep.recipes.xumx_vggish import config_for


def get_config(arg=None):
    return config_for("disreg", arg)
