# camstream for an edge host: `docker build -t camstream .`, then
#   docker run -p 8000:8000 camstream                      the demo camera
#   docker run -p 8000:8000 -v ./camstream.toml:/etc/camstream/camstream.toml:ro \
#     --device /dev/video0 camstream                       your cameras
# docs/docker.md has the details, and docker-compose.yml an example.
# scripts/docker-smoke.sh builds and runs this file (with podman where no
# Docker engine runs).

# --- build: the release binary ----------------------------------------------
FROM rust:1.95-bookworm AS build
# Headers and .pc files the gstreamer-rs crates link against.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      pkg-config libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# The cache mounts keep downloaded crates and compiled dependencies between
# builds on one machine, so a code change recompiles camstream alone
# (minutes less on a small box). The binary is copied out of the cached
# target directory, which is not part of the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin camstream \
 && cp target/release/camstream /usr/local/bin/camstream

# --- runtime: GStreamer plugins and the binary, nothing for building ---------
FROM debian:bookworm-slim
# Exactly the plugin sets camstream's pipelines and templates use:
#   base     videotestsrc, decodebin, videoconvertscale, videorate, appsink
#   good     rtspsrc, rtph264/265depay, jpegenc/jpegdec, v4l2src, souphttpsrc,
#            multipartdemux, qtdemux/matroskademux (file sources)
#   bad      h264parse, h265parse, jpegparse
#   libav    avdec_h264, avdec_h265 (camera video)
#   x        clockoverlay (the demo camera's clock; Debian ships the pango
#            overlays here)
# glib-networking gives souphttpsrc and rtspsrc TLS (https://, rtsps://).
# Not -ugly: its x264enc only serves the test suite's RTSP server.
# fontconfig (the clock's font) trusts its cache only when each font
# directory's mtime matches it to the nanosecond, and image layers keep whole
# seconds: without whole-second mtimes before fc-cache, every start rescans
# the fonts and logs "Fontconfig error: No writable cache directories".
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      gstreamer1.0-plugins-base gstreamer1.0-plugins-good \
      gstreamer1.0-plugins-bad gstreamer1.0-libav gstreamer1.0-x \
      glib-networking ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && find /usr/share/fonts /usr/local/share/fonts -type d \
      -exec touch -m -d @1700000000 {} + \
 && fc-cache --system-only --force \
 && useradd --system --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin --groups video camstream \
 && mkdir -p /etc/camstream

COPY --from=build /usr/local/bin/camstream /usr/local/bin/camstream
COPY pipelines /usr/share/camstream/pipelines
COPY camstream.example.toml /usr/share/doc/camstream/camstream.example.toml

# The shipped templates, whatever [server] pipelines_dir says; set it to
# /etc/camstream/pipelines to use your own next to the config. NO_COLOR:
# `docker logs` is no terminal, so log lines carry no colour codes.
ENV CAMSTREAM_PIPELINES_DIR=/usr/share/camstream/pipelines \
    NO_COLOR=1
# camstream reads camstream.toml from its working directory when there is
# one, and serves the demo camera when there is not.
WORKDIR /etc/camstream
VOLUME ["/etc/camstream"]
USER camstream
EXPOSE 8000
# `camstream healthcheck` GETs /healthz on the port the config listens on;
# the image needs no curl.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
  CMD ["camstream", "healthcheck"]
# camstream is PID 1: it stops its cameras and closes its streams on SIGTERM
# (docker stop) and SIGINT, and starts no child processes to reap.
ENTRYPOINT ["camstream"]
CMD ["serve"]
