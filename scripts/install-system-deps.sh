#!/usr/bin/env bash
# Installs the few system programs dfd needs that PyPI does not ship:
#   ffmpeg    (tests and benchmarks build their media with it)
#   espeak-ng (tests make synthetic speech to dub clips with)
#   chromium  (the browser tests drive it through Playwright; Playwright's own download is not used)
#   promtool  (Debian's prometheus package: the alert rules' unit tests)
#   fpcalc    (libchromaprint-tools: the audio fingerprint of audio files, for known fakes)
#   cmake, pkg-config, g++ and FFmpeg's development headers (the `vpdq` package, Meta's
#             reference vPDQ that tests check dfd's video hashes against, builds from source)
# Uses apt-get as root or through sudo; elsewhere it says what is missing and carries on.
set -euo pipefail
missing=()
command -v ffmpeg >/dev/null 2>&1 || missing+=(ffmpeg)
command -v espeak-ng >/dev/null 2>&1 || missing+=(espeak-ng)
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v fpcalc >/dev/null 2>&1 || missing+=(libchromaprint-tools)
command -v cmake >/dev/null 2>&1 || missing+=(cmake)
command -v g++ >/dev/null 2>&1 || missing+=(g++)
command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
for lib in avcodec avformat avutil swscale avdevice avfilter; do
  pkg-config --exists "lib$lib" 2>/dev/null || missing+=("lib$lib-dev")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if command -v apt-get >/dev/null 2>&1; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo -n"
  if $sudo true 2>/dev/null; then
    echo "dfd: installing ${missing[*]} with apt-get" >&2
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -qq >/dev/null || true
    $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    exit 0
  fi
fi
echo "dfd: please install ${missing[*]} with your package manager (brew install ffmpeg espeak-ng prometheus on macOS; the browser tests need chromium at /usr/bin/chromium)" >&2
