"""X-UMX + VGGish, method 'conreg': the xumx_vggish recipe.

jaxsep train --config configs/xumx_conreg.py[:tiny] --workdir runs/xumx_conreg --data ROOT
"""

from jaxsep.recipes.xumx_vggish import config_for


def get_config(arg=None):
    return config_for("conreg", arg)
