#!/usr/bin/env bash
# Prints a camstream config with one camera per shipped template
# (pipelines/*.pipeline) and one per kind of source without a template
# (V4L2 `0`, RTSP, RTSPS, HTTP MJPEG with and without reduced-size decoding,
# HTTPS, a file, `test:`, a gst-launch description), for `camstream check`
# in the smoke tests (scripts/docker-smoke.sh, scripts/deb-smoke.sh): between
# them they name every element camstream's pipelines use, and every element
# decodebin picks for common streams. The addresses are TEST-NET-1
# (192.0.2.0/24, RFC 5737) and `check` opens nothing; a missing device or
# file is a warning, a missing element an error.
set -euo pipefail
cd "$(dirname "$0")/.."

for template in pipelines/*.pipeline; do
  name=$(basename "$template" .pipeline)
  case "$name" in
    rtsp-*) source="rtsp://user:secret@192.0.2.1/stream" ;;
    v4l2-*) source="/dev/video0" ;;
    http-*) source="http://192.0.2.1/video.mjpg" ;;
    file-*) source="/videos/clip.mp4" ;;
    test) source="test:" ;;
    *) source="" ;;
  esac
  printf '[[cameras]]\nid = "template-%s"\npipeline_file = "%s"\n' "$name" "$(basename "$template")"
  [ -z "$source" ] || printf 'source = "%s"\n' "$source"
  printf '\n'
done

cat <<'EOF'
[[cameras]]
id = "v4l2"
source = 0

[[cameras]]
id = "rtsp"
source = "rtsp://user:secret@192.0.2.1/stream"
transport = "udp"
max_fps = 5

[[cameras]]
id = "rtsps"
source = "rtsps://192.0.2.1:322/stream"

[[cameras]]
id = "http"
source = "http://192.0.2.1/video.mjpg"

[[cameras]]
id = "http-lowres"
source = "http://192.0.2.1/video.mjpg"
scale = 0.25
mjpeg_lowres = true

[[cameras]]
id = "https"
source = "https://192.0.2.1/video.mjpg"

[[cameras]]
id = "file"
source = "/videos/clip.mp4"

[[cameras]]
id = "test"
source = "test:"

[[cameras]]
id = "launch"
source = "videotestsrc is-live=true pattern=ball ! videoconvert ! videoscale ! video/x-raw,width=640,height=360"
EOF
