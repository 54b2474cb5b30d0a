#!/usr/bin/env bash
# Makes, in podman's local image store, the two images camstream's Dockerfile
# starts FROM, for machines that run podman but cannot reach a registry:
#   docker.io/library/debian:bookworm-slim  debootstrap --variant=minbase of
#                                           bookworm from this host's Debian
#                                           mirror, with this host's apt
#                                           sources and CA certificates,
#                                           trimmed as the official slim
#                                           image is (no docs, man pages or
#                                           translations; apt keeps no cache)
#   docker.io/library/rust:1.95-bookworm    that base + gcc, libc6-dev,
#                                           pkg-config, ca-certificates and
#                                           this host's Rust 1.95 toolchain
#                                           (rustup cannot download here)
# Images already in the store are kept (that is the cache between runs)
# unless an older version of this script made them; --rebuild makes them
# again. Also installs podman, buildah, debootstrap and
# runc when missing and sets up /etc/containers/containers.conf (see
# docs/docker.md for why each setting is needed). Needs root.
#
# With real Docker and Docker Hub none of this is needed: `docker build .`
# pulls the official images.
set -euo pipefail

BASE_IMAGE=docker.io/library/debian:bookworm-slim
RUST_IMAGE=docker.io/library/rust:1.95-bookworm
RUST_SERIES=1.95
TOOLCHAIN=1.95.0-x86_64-unknown-linux-gnu
CONTAINERS_CONF=/etc/containers/containers.conf
# Bumped whenever the way the images are made changes, so images an older
# version of this script left in the store are made again: 2 trims the base
# like the official slim image (image sizes measured here then match).
RECIPE_LABEL=camstream.base-recipe
RECIPE=2

rebuild=0
for arg in "$@"; do
  case "$arg" in
    --rebuild) rebuild=1 ;;
    *) echo "usage: $0 [--rebuild]" >&2; exit 2 ;;
  esac
done

say() { echo "docker-base-images: $*"; }
die() { echo "docker-base-images: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "needs root (debootstrap, and podman's rootful store that the smoke test uses)"

# --- tools -------------------------------------------------------------------
tools=(podman buildah debootstrap runc)
missing=()
for p in "${tools[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get to install them"
  say "installing ${missing[*]}"
  # Another apt run (a colleague's install) may hold the lock for a while.
  DEBIAN_FRONTEND=noninteractive apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q -o DPkg::Lock::Timeout=600 \
    --no-install-recommends "${missing[@]}"
fi

# --- containers.conf ---------------------------------------------------------
# crun fails on this kind of VM's hybrid cgroup setup, so podman must use
# runc; and podman's default open-files limit for containers (1048576) is
# more than the VM allows, so every `podman run` fails without an explicit one.
if [ ! -e "$CONTAINERS_CONF" ]; then
  say "writing $CONTAINERS_CONF (runtime runc, ulimits the VM allows)"
  mkdir -p "$(dirname "$CONTAINERS_CONF")"
  cat >"$CONTAINERS_CONF" <<'EOF'
# Written by camstream's scripts/docker-base-images.sh.
[containers]
# podman's default nofile limit is more than this VM allows.
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[engine]
# crun fails on this kernel's hybrid cgroups.
runtime = "runc"
EOF
elif ! grep -Eq '^\s*runtime\s*=\s*"runc"' "$CONTAINERS_CONF" \
  || ! grep -Eq '^\s*default_ulimits\s*=' "$CONTAINERS_CONF"; then
  # Editing someone's TOML blindly could break it; say what to add instead.
  say "warning: $CONTAINERS_CONF exists but lacks runtime = \"runc\" under [engine]" \
    "or default_ulimits under [containers]; if podman fails, add them (see docs/docker.md)"
fi

# In the store, and made by this version of the script.
exists() {
  podman image exists "$1" \
    && [ "$(podman image inspect --format "{{index .Labels \"$RECIPE_LABEL\"}}" "$1")" = "$RECIPE" ]
}

# What the official debian:*-slim images (debuerreotype's slimify and
# minimizing config) do to a debootstrap root: dpkg leaves out docs except
# copyright files, man and info pages and translations, now and in every
# later install; apt deletes downloaded packages and its binary caches after
# each run. Without this the base made here is 122 MB, with it 78 MB, and
# every image size measured here would be inflated by the difference.
slim_like_official() {
  local root=$1
  cat >"$root/etc/dpkg/dpkg.cfg.d/docker-slim" <<'EOF'
# Written by camstream's scripts/docker-base-images.sh, as in the official
# debian:*-slim images.
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/lintian/overrides/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
path-exclude /usr/share/man/*
EOF
  cat >"$root/etc/apt/apt.conf.d/docker-clean" <<'EOF'
// Written by camstream's scripts/docker-base-images.sh, as in the official
// Debian images: no package cache left in image layers.
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
  echo 'Acquire::Languages "none";' >"$root/etc/apt/apt.conf.d/docker-no-languages"
  find "$root/usr/share/doc" -mindepth 1 -not -type d -not -name copyright -delete
  find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete
  find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} +
  rm -rf "$root"/usr/share/{groff,info,linda,man}/* "$root"/usr/share/lintian/overrides/*
}

# --- debian:bookworm-slim ----------------------------------------------------
# The Debian mirror this host's apt uses (first non-comment URI ending in
# /debian), so the image is made from what the host can reach.
host_mirror() {
  local files=(/etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources)
  local m
  m=$(cat "${files[@]}" 2>/dev/null | grep -v '^\s*#' | grep -oE 'https?://[^ ]+/debian/?( |$)' \
    | head -n 1 | tr -d ' ') || true
  echo "${m:-http://deb.debian.org/debian}"
}

# Copies this host's apt sources (and the keyrings they name), apt proxy
# settings and CA certificates into a root filesystem: apt inside a build then
# uses the same mirror, and HTTPS inside a build (crates.io) trusts what the
# host trusts, including a local egress proxy's CA.
give_host_config() {
  local root=$1 f key
  rm -f "$root/etc/apt/sources.list"
  mkdir -p "$root/etc/apt/sources.list.d" "$root/usr/share/keyrings"
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    cp "$f" "$root$f"
    for key in $(grep -oiE '(signed-by[=:] *)[^] ]+' "$f" | sed -E 's/^[^=:]*[=:] *//'); do
      [ -f "$key" ] && { mkdir -p "$root$(dirname "$key")"; cp "$key" "$root$key"; }
    done
  done
  for f in /etc/apt/apt.conf.d/*; do
    [ -f "$f" ] && grep -qi 'proxy' "$f" && cp "$f" "$root$f"
  done
  mkdir -p "$root/usr/local/share/ca-certificates" "$root/etc/ssl/certs"
  if compgen -G '/usr/local/share/ca-certificates/*' >/dev/null; then
    cp -r /usr/local/share/ca-certificates/. "$root/usr/local/share/ca-certificates/"
  fi
  [ -f /etc/ssl/certs/ca-certificates.crt ] && cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/"
  return 0
}

if [ $rebuild -eq 1 ] || ! exists "$BASE_IMAGE"; then
  mirror=$(host_mirror)
  rootfs=$(mktemp -d /var/tmp/camstream-rootfs.XXXXXX)
  trap 'rm -rf "$rootfs"' EXIT
  say "debootstrap --variant=minbase bookworm from $mirror (a few minutes)"
  start=$(date +%s)
  debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >"$rootfs.log" 2>&1 \
    || { tail -n 20 "$rootfs.log" >&2; die "debootstrap failed (full log: $rootfs.log)"; }
  rm -f "$rootfs.log"
  give_host_config "$rootfs"
  slim_like_official "$rootfs"
  # Like the official slim image: no package cache, no stale lists.
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/cache/apt/*.bin \
    "$rootfs"/var/lib/apt/lists/*
  tar --numeric-owner -C "$rootfs" -c . \
    | podman import --quiet --change 'CMD ["bash"]' --change "LABEL $RECIPE_LABEL=$RECIPE" \
      --message "debootstrap minbase bookworm made by camstream scripts/docker-base-images.sh" \
      - "$BASE_IMAGE" >/dev/null
  rm -rf "$rootfs"
  trap - EXIT
  say "made $BASE_IMAGE in $(( $(date +%s) - start ))s"
  rebuild=1 # the Rust image is made from this one
else
  say "$BASE_IMAGE is in the local store (--rebuild to make it again)"
fi

# --- rust:1.95-bookworm ------------------------------------------------------
if [ $rebuild -eq 1 ] || ! exists "$RUST_IMAGE"; then
  rustc=$(command -v rustc || echo "$HOME/.cargo/bin/rustc")
  [ -x "$rustc" ] || die "no Rust toolchain on this host to copy into $RUST_IMAGE (run scripts/install-deps.sh)"
  version=$("$rustc" --version | awk '{print $2}')
  case "$version" in
    "$RUST_SERIES".*) ;;
    *) die "the host's rustc is $version, but $RUST_IMAGE needs $RUST_SERIES.x" ;;
  esac
  sysroot=$("$rustc" --print sysroot)
  rustup=$(command -v rustup || echo "$HOME/.cargo/bin/rustup")
  [ -x "$rustup" ] || die "no rustup on this host ($RUST_IMAGE mirrors the official image's layout)"
  say "making $RUST_IMAGE from $BASE_IMAGE and the host's Rust $version ($sysroot)"
  start=$(date +%s)
  ctr=$(buildah from --pull=never "$BASE_IMAGE")
  trap 'buildah rm "$ctr" >/dev/null 2>&1 || true' EXIT
  buildah run "$ctr" -- sh -c 'apt-get update -q \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
       gcc libc6-dev pkg-config ca-certificates \
    && rm -rf /var/lib/apt/lists/*' >/dev/null
  # The official image's layout: RUSTUP_HOME=/usr/local/rustup,
  # CARGO_HOME=/usr/local/cargo, rustup proxies in /usr/local/cargo/bin.
  buildah copy "$ctr" "$sysroot" "/usr/local/rustup/toolchains/$TOOLCHAIN" >/dev/null
  buildah copy "$ctr" "$rustup" /usr/local/cargo/bin/rustup >/dev/null
  buildah run "$ctr" -- sh -c "set -e
    rm -rf /usr/local/rustup/toolchains/$TOOLCHAIN/share/doc
    cd /usr/local/cargo/bin
    for p in cargo cargo-clippy cargo-fmt clippy-driver rustc rustdoc rustfmt; do ln -sf rustup \$p; done
    printf 'version = \"12\"\ndefault_toolchain = \"$TOOLCHAIN\"\nprofile = \"minimal\"\n' \
      >/usr/local/rustup/settings.toml
    chmod -R a+w /usr/local/rustup /usr/local/cargo"
  buildah config \
    --env RUSTUP_HOME=/usr/local/rustup \
    --env CARGO_HOME=/usr/local/cargo \
    --env PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env RUST_VERSION="$version" \
    --label org.opencontainers.image.description="made by camstream scripts/docker-base-images.sh from the host's toolchain" \
    "$ctr"
  got=$(buildah run "$ctr" -- cargo --version) || die "cargo does not run inside $RUST_IMAGE"
  buildah commit --rm "$ctr" "$RUST_IMAGE" >/dev/null
  trap - EXIT
  say "made $RUST_IMAGE ($got) in $(( $(date +%s) - start ))s"
else
  say "$RUST_IMAGE is in the local store (--rebuild to make it again)"
fi
