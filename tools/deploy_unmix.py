"""Merge per-stem stage-2 unmix model directories into one deployed separator directory.

    python tools/deploy_unmix.py --stem vocals=runs/vocals_s2/model --stem drums=runs/drums_s2/model \
        --stem bass=runs/bass_s2/model --stem other=runs/other_s2/model --out models/unmix
    jaxsep separate song.wav --model models/unmix      # all four stems, chunk by chunk
"""

from __future__ import annotations

import argparse
import sys

from jaxsep.errors import JaxsepError
from jaxsep.models.unmix import build_deployed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stem", action="append", required=True, help="STEM=STAGE2_MODEL_DIR")
    parser.add_argument("--out", required=True, help="deployed model directory to write")
    args = parser.parse_args(argv)
    try:
        pairs = [item.split("=", 1) for item in args.stem]
        if any(len(pair) != 2 or not all(pair) for pair in pairs):
            raise JaxsepError(f"--stem expects STEM=DIR, got {args.stem}")
        out = build_deployed(dict(pairs), args.out)
    except JaxsepError as e:
        print(f"deploy_unmix: error: {e}", file=sys.stderr)
        return 2
    print(f"wrote deployed unmix model {out} ({', '.join(stem for stem, _ in pairs)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
