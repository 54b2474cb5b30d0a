# camstream for an edge host: `docker build -t camstream .`, then
#   docker run -p 8000:8000 camstream                      the demo camera
#   docker run -p 8000:8000 -v ./camstream.toml:/etc/camstream/camstream.toml:ro \
#     --device /dev/video0 camstream                       your cameras
# docs/docker.md has the details, and docker-compose.yml an example.
# scripts/docker-smoke.sh builds and runs this file (with podman where no
# Docker engine runs).
#
# Five stages. `build` compiles camstream; `ffmpeg` compiles FFmpeg's
# libraries with only the decoders camstream uses; `runtime-base` is the
# final image's base (Debian slim, certificates, a font); `plugins` installs
# Debian's GStreamer plugin packages and picks out the plugin files camstream
# needs and the libraries they load (packaging/image/); the final stage is
# runtime-base plus those files and the binary. Nothing names an
# architecture: the image is built for the platform the builder runs on.

# --- build: the release binary ----------------------------------------------
FROM rust:1.95-bookworm AS build
# Headers and .pc files the gstreamer-rs crates link against; libturbojpeg
# for the DCT JPEG decoder.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      pkg-config libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev \
      libturbojpeg0-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# The cache mounts keep downloaded crates and compiled dependencies between
# builds on one machine, so a code change recompiles camstream alone
# (minutes less on a small box). The binary is copied out of the cached
# target directory, which is not part of the image, with its line tables
# (for backtraces) compressed: 48 MB -> 17 MB, and Rust's backtraces read
# zlib-compressed sections.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin camstream \
 && objcopy --compress-debug-sections=zlib target/release/camstream /usr/local/bin/camstream

# --- ffmpeg: libav* with camstream's decoders only ---------------------------
# Debian's gstreamer1.0-libav plugin is kept, but Debian's FFmpeg libraries
# link ~170 others (x265, codec2, librsvg, ICU, libplacebo, flite voices...):
# 204 MB that decode nothing a camera sends. The same FFmpeg release, built
# from Debian's source package with only these decoders and no external
# library, has the same sonames and symbol versions and is 4 MB. The
# decoders: H.264 and H.265 (IP cameras; the rtsp templates), MJPEG
# (avdec_mjpeg's reduced-size decoding, mjpeg_lowres) and MPEG-4 part 2
# (older cameras). nasm assembles FFmpeg's x86 SIMD code (3x faster H.264);
# other architectures' SIMD code needs only gcc, and nasm is harmless there.
FROM debian:bookworm-slim AS ffmpeg
RUN set -eu; \
    for f in /etc/apt/sources.list.d/*.sources; do \
      [ ! -e "$f" ] || sed -i 's/^Types: deb$/Types: deb deb-src/' "$f"; \
    done; \
    [ ! -e /etc/apt/sources.list ] \
      || sed -n 's/^deb /deb-src /p' /etc/apt/sources.list >/etc/apt/sources.list.d/deb-src.list; \
    apt-get update; \
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      dpkg-dev gcc libc6-dev make nasm; \
    mkdir /usr/src/ffmpeg; \
    cd /usr/src/ffmpeg; \
    apt-get source --only-source ffmpeg; \
    cd ffmpeg-*/; \
    ./configure --prefix=/usr \
      --libdir=/usr/lib/camstream/ffmpeg --shlibdir=/usr/lib/camstream/ffmpeg \
      --enable-shared --disable-static --disable-programs --disable-doc --disable-debug \
      --disable-everything --disable-autodetect --disable-network \
      --disable-avdevice --disable-swscale --disable-swresample --disable-postproc \
      --enable-decoder=h264,hevc,mjpeg,mpeg4 \
      --enable-parser=h264,hevc,mjpeg,mpeg4video; \
    make -j"$(nproc)"; \
    make install-libs DESTDIR=/out; \
    rm -rf /out/usr/lib/camstream/ffmpeg/pkgconfig; \
    mkdir -p /out/etc/ld.so.conf.d /out/usr/share/doc/camstream; \
    echo /usr/lib/camstream/ffmpeg >/out/etc/ld.so.conf.d/camstream-ffmpeg.conf; \
    { echo "/usr/lib/camstream/ffmpeg: FFmpeg's libraries, built from Debian's"; \
      echo "source package $(dpkg-parsechangelog -S Source) $(dpkg-parsechangelog -S Version)"; \
      echo "(LGPL 2.1 or later; source: apt-get source ffmpeg) with:"; \
      sed -n 's/^FFMPEG_CONFIGURATION=//p' ffbuild/config.mak; \
    } >/out/usr/share/doc/camstream/ffmpeg.txt; \
    cp COPYING.LGPLv2.1 /out/usr/share/doc/camstream/ffmpeg-COPYING.LGPLv2.1; \
    rm -rf /var/lib/apt/lists/*

# --- runtime-base: what the final image starts from --------------------------
# From Debian packages, installed whole (they are small): CA certificates
# (TLS for https:// and rtsps:// sources), fontconfig and one font family
# (DejaVu) for the demo camera's clock and the offline placeholder's text,
# libturbojpeg (the DCT JPEG decoder) and, on amd64, the Intel VA-API drivers
# (iHD for Broadwell and later, i965 before) for hardware decoding.
# fontconfig trusts its cache only when each font directory's mtime matches
# it to the nanosecond, and image layers keep whole seconds: without
# whole-second mtimes before fc-cache, every start rescans the fonts and
# logs "Fontconfig error: No writable cache directories".
FROM debian:bookworm-slim AS runtime-base
RUN set -eu; \
    case "$(dpkg --print-architecture)" in \
      amd64) va_drivers="intel-media-va-driver i965-va-driver" ;; \
      *) va_drivers="" ;; \
    esac; \
    apt-get update; \
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      ca-certificates fontconfig libturbojpeg0 $va_drivers; \
    apt-get clean; \
    rm -rf /var/lib/apt/lists/*; \
    find /usr/share/fonts /usr/local/share/fonts -type d \
      -exec touch -m -d @1700000000 {} +; \
    fc-cache --system-only --force; \
    useradd --system --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin --groups video camstream; \
    mkdir -p /etc/camstream

# --- plugins: the GStreamer files camstream needs, picked out ---------------
# Debian's plugin packages depend on far more than camstream loads (Mesa and
# LLVM, GTK, ICU, a MIDI soundfont...). Installed here, in a stage that is
# thrown away, they let packaging/image/collect.sh copy exactly the plugin
# files of the elements in packaging/image/elements.txt and the libraries
# those load into /staging, leaving out what runtime-base already has.
# gstreamer1.0-libav is installed without its dependencies (Debian's
# FFmpeg): its plugin loads the ffmpeg stage's libraries. Installed, not
# just unpacked, so the list of copied files can name its package.
FROM runtime-base AS plugins
RUN find / -xdev -not -type d >/var/tmp/runtime-base.files \
 && apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good \
      gstreamer1.0-plugins-bad gstreamer1.0-x glib-networking libsoup-3.0-0 \
 && cd /var/tmp \
 && apt-get download gstreamer1.0-libav \
 && dpkg --force-depends --install gstreamer1.0-libav_*.deb \
 && rm gstreamer1.0-libav_*.deb \
 && rm -rf /var/lib/apt/lists/*
COPY --from=ffmpeg /out/ /
COPY --from=build /usr/local/bin/camstream /usr/local/bin/camstream
COPY packaging/image/ /usr/src/camstream-image/
# LD_LIBRARY_PATH: Debian's FFmpeg is installed here too (plugins-bad's
# chromaprint needs it); the closure must resolve to the ffmpeg stage's.
RUN find /usr/lib/camstream /etc/ld.so.conf.d -not -type d >>/var/tmp/runtime-base.files \
 && ldconfig \
 && LD_LIBRARY_PATH=/usr/lib/camstream/ffmpeg \
    /usr/src/camstream-image/collect.sh /usr/src/camstream-image/elements.txt \
      /var/tmp/runtime-base.files /usr/local/bin/camstream /staging

# --- runtime: runtime-base + the picked GStreamer files + camstream ---------
FROM runtime-base
COPY --from=ffmpeg /out/ /
COPY --from=plugins /staging/ /
RUN ldconfig
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
