#!/usr/bin/env bash
# One-command set-up for a fresh Debian/Ubuntu machine, then run the demo or the test suite.
#   bash tools/setup.sh demo   # installs everything, runs `jaxsep demo`
#   bash tools/setup.sh test   # installs everything, runs the whole test suite
#   bash tools/setup.sh install
#   bash tools/setup.sh freeze # rewrite constraints.txt from .venv (after a deliberate upgrade)
# System packages: ffmpeg (musdb/stempeg need ffmpeg+ffprobe even for WAV), libfluidsynth3 and
# GM soundfonts (TimGM6mb, FluidR3) for the synthetic corpus. Python packages go to ./.venv.
set -euo pipefail
cd "$(dirname "$0")/.."
what="${1:-test}"
shift || true

need_apt=()
command -v ffmpeg >/dev/null && command -v ffprobe >/dev/null || need_apt+=(ffmpeg)
ldconfig -p 2>/dev/null | grep -q libfluidsynth.so.3 || need_apt+=(libfluidsynth3 fluidsynth)
[ -f /usr/share/sounds/sf2/TimGM6mb.sf2 ] || need_apt+=(timgm6mb-soundfont)
[ -f /usr/share/sounds/sf2/FluidR3_GM.sf2 ] || need_apt+=(fluid-soundfont-gm)
if [ ${#need_apt[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  echo "installing system packages: ${need_apt[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
  .venv/bin/pip install -q --upgrade pip
fi
if [ ! -f .venv/.jaxsep-installed ] || [ pyproject.toml -nt .venv/.jaxsep-installed ] \
  || [ constraints.txt -nt .venv/.jaxsep-installed ]; then
  # torch==2.13.0 exactly: the CPU wheel; any other spelling pulls the CUDA build. Every other
  # package at the version constraints.txt names (the last green CI's set).
  .venv/bin/pip install -q -c constraints.txt -e ".[torch,synth,test]"
  touch .venv/.jaxsep-installed
fi

case "$what" in
  install) ;;
  demo) exec .venv/bin/jaxsep demo "$@" ;;
  # --dist loadfile: a file's tests share one worker, so its module fixtures (a trained demo,
  # a converted Jukebox) and its compiled programs are built once, not once per worker (1500
  # worker-seconds instead of ~2000; 766 s wall instead of ~1000 s on the 2-core host)
  test) exec .venv/bin/python -m pytest -n 2 --dist loadfile -q --durations=15 tests "$@" ;;
  lint) .venv/bin/ruff format --check . && exec .venv/bin/ruff check . ;;
  freeze)  # after a deliberate upgrade in .venv: rewrite constraints.txt from it (header kept)
    { grep '^#' constraints.txt; .venv/bin/pip freeze --exclude-editable | grep -v '^torch=='; } \
      > constraints.txt.new && mv constraints.txt.new constraints.txt ;;
  *) echo "usage: bash tools/setup.sh {demo|test|install|lint|freeze}" >&2; exit 2 ;;
esac
