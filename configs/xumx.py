"""X-UMX baseline (MDL + combination loss): the xumx_vggish recipe.

jaxsep train --config configs/xumx.py[:tiny] --workdir runs/xumx_baseline --data ROOT
"""

from jaxsep.recipes.xumx_vggish import config_for


def get_config(arg=None):
    return config_for("baseline", arg)
