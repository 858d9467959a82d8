"""PyTorch checkpoints -> jaxsep model directories (`jaxsep convert KIND SRC OUT`).

Each converter reads its file with `torch.load(weights_only=True)` (an explicit allow-list where a
public checkpoint pickles more than tensors), maps every key to Flax params, and fails with the
names of missing or unexpected keys. Nothing is written unless conversion succeeded, and the model
directory itself is written atomically.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from jaxsep.errors import JaxsepError

KINDS = ("jukebox", "xumx", "umx", "vggish", "chimera")

# Published sha256 of the public Jukebox 5b `vqvae.pth.tar` (third-party listing, see
# ../shared/reference/jukebox.md section 7; not verifiable offline). `convert` prints the
# file's digest so users can compare it with their download.
JUKEBOX_VQVAE_SHA256 = "69745413a48e887f8a3fe91b972a6f7f434021a1ce911a99187b331eb48c059a"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def parse_levels(text: str | None) -> int | None:
    """`--levels 0` / `0,1` -> number of bottom levels kept (Jukebox levels nest bottom-up)."""
    if text is None:
        return None
    try:
        levels = sorted({int(v) for v in text.split(",")})
    except ValueError as e:
        raise JaxsepError(f"--levels {text!r}: expected level indices like 0 or 0,1") from e
    if levels != list(range(len(levels))):
        raise JaxsepError(f"--levels {text!r}: levels must be 0 or a run 0,1[,2] from the bottom")
    return len(levels)


def convert(kind: str, src: Path, **options: Any) -> tuple[dict, dict]:
    """`(config, variables)` of a model directory from a PyTorch checkpoint of `kind`."""
    src = Path(src)
    if not src.exists():
        raise JaxsepError(f"{src}: no such file or directory")
    if kind == "xumx":
        from jaxsep.convert.xumx import convert_xumx

        return convert_xumx(src)
    if kind == "umx":
        from jaxsep.convert.umx import convert_umx

        return convert_umx(src, targets=options.get("targets"))
    if kind == "vggish":
        from jaxsep.convert.vggish import convert_torchvggish

        return convert_torchvggish(
            src, options.get("pca"), final_relu=not options.get("tf_embedding", False)
        )
    if kind == "jukebox":
        from jaxsep.convert.jukebox import convert_jukebox

        model_kwargs, variables = convert_jukebox(src, levels=parse_levels(options.get("levels")))
        config = {
            "model": "vqvae",
            "model_kwargs": model_kwargs,
            "sample_rate": model_kwargs.get("sample_rate", 44100),
            "channels": 1,
            "converted_from": {"file": src.name, "sha256": sha256_of(src)},
        }
        return config, variables
    if kind == "chimera":
        from jaxsep.convert.chimera import convert_chimera

        return convert_chimera(src)
    raise JaxsepError(f"unknown checkpoint kind {kind!r} (one of {', '.join(KINDS)})")


def convert_to_model_dir(kind: str, src: Path, out: Path, **options: Any) -> Path:
    """Convert and write the model directory `out` (atomically; nothing on failure)."""
    from jaxsep.modeldir import save_model_dir

    config, variables = convert(kind, src, **options)
    return save_model_dir(out, config, variables)
