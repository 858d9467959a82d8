"""X-UMX + VGGish, method 'concat': the xumx_vggish recipe.

jaxsep train --config configs/xumx_concat.py[:tiny] --workdir runs/xumx_concat --data ROOT
"""

from jaxsep.recipes.xumx_vggish import config_for


def get_config(arg=None):
    return config_for("concat", arg)
