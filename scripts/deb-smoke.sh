#!/usr/bin/env bash
# Builds camstream's Debian package with cargo-deb, installs it on this
# machine with apt-get, checks what a user of the package relies on, then
# removes it with --purge:
#   - the package declares the GStreamer plugin packages, libturbojpeg and
#     adduser, ships the unit and the config as a conffile, and installing
#     it makes the camstream system user in groups video and render;
#   - the installed binary, run as that user with the unit's environment,
#     `check`s the shipped config and a config using every template and
#     kind of source (scripts/smoke-config.sh): every element installed;
#   - it serves the demo camera (started directly on a free port: CI has
#     no systemd as PID 1), whose stream delivers whole JPEG frames
#     (scripts/smoke-stream.py), and stops on SIGTERM with status 0;
#   - after `apt-get remove --purge`, the package, its binary, unit and
#     config are gone and no camstream process of it is left running.
#
# Needs root and apt (Debian or Ubuntu); refuses to touch a camstream
# package that is already installed. If it cannot run it says why and
# fails, unless CAMSTREAM_SMOKE_ALLOW_SKIP=1, when it prints SKIPPED and
# exits 0. It never passes without having run.
set -euo pipefail
cd "$(dirname "$0")/.."

# The newest cargo-deb release when this was written; its rust-version is
# 1.85, so it builds with the project's Rust 1.95.
CARGO_DEB_VERSION=3.8.0
CARGO=${CARGO:-$(command -v cargo || echo "$HOME/.cargo/bin/cargo")}
# The unit's environment (packaging/deb/camstream.service).
UNIT_ENV=(CAMSTREAM_PIPELINES_DIR=/usr/share/camstream/pipelines NO_COLOR=1)
READY_TIMEOUT_S=60

say() { echo "deb-smoke: $*"; }
skip() {
  say "cannot run: $*" >&2
  if [ "${CAMSTREAM_SMOKE_ALLOW_SKIP:-0}" = 1 ]; then
    say "SKIPPED (CAMSTREAM_SMOKE_ALLOW_SKIP=1): $*"
    exit 0
  fi
  say "FAILED: not run; set CAMSTREAM_SMOKE_ALLOW_SKIP=1 to accept skipping on this machine" >&2
  exit 1
}
fail() { say "FAILED: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || skip "installing a package needs root"
command -v apt-get >/dev/null && command -v dpkg >/dev/null || skip "no apt-get and dpkg (not Debian or Ubuntu)"
if dpkg-query -W -f='${Status}' camstream 2>/dev/null | grep -q "installed"; then
  skip "a camstream package is already installed here; this test would replace and purge it"
fi
if ! command -v python3 >/dev/null; then
  say "installing python3 (reads the MJPEG stream)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q -o DPkg::Lock::Timeout=600 \
    --no-install-recommends python3 >/dev/null
fi

# The installed camstream's processes, by executable (also once deleted),
# so other camstream binaries on this machine (a build's, a test's) never
# count.
installed_pids() {
  local exe pid
  for exe in /proc/[0-9]*/exe; do
    case "$(readlink "$exe" 2>/dev/null)" in
      /usr/bin/camstream | "/usr/bin/camstream (deleted)")
        pid=${exe#/proc/}
        echo "${pid%/exe}"
        ;;
    esac
  done
}

work=$(mktemp -d)
server=""
installed=0
cleanup() {
  if [ -n "$server" ] && kill -0 "$server" 2>/dev/null; then
    kill -KILL "$server" 2>/dev/null || true
  fi
  if [ "$installed" = 1 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get remove --purge -y -q camstream >/dev/null 2>&1 || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

# --- cargo-deb and the package ---------------------------------------------
start=$(date +%s)
if "$CARGO" deb --version 2>/dev/null | grep -qx "cargo-deb $CARGO_DEB_VERSION"; then
  say "cargo-deb $CARGO_DEB_VERSION is installed"
else
  say "installing cargo-deb $CARGO_DEB_VERSION"
  "$CARGO" install cargo-deb --version "$CARGO_DEB_VERSION" --locked --quiet \
    || fail "cannot install cargo-deb $CARGO_DEB_VERSION"
fi
tool_s=$(( $(date +%s) - start ))

start=$(date +%s)
# cargo-deb builds the release binary (--locked: Cargo.lock's versions) and
# prints the package's path. --fast: lighter compression of the .deb, half
# a minute less; what it installs is the same.
#
# CAMSTREAM_DEB_BINARY=PATH packages a release binary of this commit built
# elsewhere instead (CI: the container image's, built from the same tree
# with the same `cargo build --release --locked` on the same Debian
# release, so CI compiles camstream in release mode once, not twice). It
# is used only if it runs here; it replaces target/release/camstream.
deb_args=(--fast --output target/debian/)
if [ -n "${CAMSTREAM_DEB_BINARY:-}" ]; then
  prebuilt_version=$("$CAMSTREAM_DEB_BINARY" --version 2>/dev/null) \
    || fail "CAMSTREAM_DEB_BINARY=$CAMSTREAM_DEB_BINARY does not run on this machine; unset it to build the package's binary here"
  case "$prebuilt_version" in
    *" $(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)"*) ;;
    *) fail "CAMSTREAM_DEB_BINARY is $prebuilt_version, not this tree's version" ;;
  esac
  mkdir -p target/release
  install -m 755 "$CAMSTREAM_DEB_BINARY" target/release/camstream
  deb_args+=(--no-build)
  say "packaging the prebuilt $CAMSTREAM_DEB_BINARY ($prebuilt_version)"
else
  deb_args+=(-- --locked)
fi
deb=$("$CARGO" deb "${deb_args[@]}" | tail -n 1) \
  || fail "cargo deb failed"
[ -f "$deb" ] || fail "cargo deb made no package ($deb)"
build_s=$(( $(date +%s) - start ))
say "built $deb ($(( $(stat -c %s "$deb") / 1000 )) kB) in ${build_s}s"

depends=$(dpkg-deb -f "$deb" Depends)
for needed in gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad \
  gstreamer1.0-libav gstreamer1.0-x glib-networking libturbojpeg0 adduser libgstreamer1.0-0; do
  case ", $depends," in
    *", $needed"[,\ ]*) ;;
    *) fail "the package does not depend on $needed: Depends: $depends" ;;
  esac
done
contents=$(dpkg-deb -c "$deb")
for path in ./usr/bin/camstream ./etc/camstream/camstream.toml \
  ./usr/share/camstream/pipelines/rtsp-h264.pipeline ./usr/lib/systemd/system/camstream.service; do
  grep -q " $path\$" <<<"$contents" || fail "the package has no $path"
done
dpkg-deb --ctrl-tarfile "$deb" | tar -xO ./conffiles | grep -qx /etc/camstream/camstream.toml \
  || fail "/etc/camstream/camstream.toml is not a conffile"
say "Depends: $depends"

# --- install ----------------------------------------------------------------
start=$(date +%s)
installed=1
# apt-get takes a path (not a package name) when it starts with / or ./.
case "$deb" in /*) ;; *) deb=./$deb ;; esac
DEBIAN_FRONTEND=noninteractive apt-get install -y -q -o DPkg::Lock::Timeout=600 "$deb" \
  >"$work/apt.log" 2>&1 || { tail -n 30 "$work/apt.log" >&2; fail "apt-get install $deb failed"; }
install_s=$(( $(date +%s) - start ))
ids=$(id camstream) || fail "no camstream user after installing"
case "$ids" in
  uid=0*) fail "the camstream user is root: $ids" ;;
  *"(video)"*"(render)"* | *"(render)"*"(video)"*) say "user: $ids" ;;
  *) fail "the camstream user is not in groups video and render: $ids" ;;
esac
[ "$(stat -c %U:%G:%a /etc/camstream/camstream.toml)" = root:camstream:640 ] \
  || fail "/etc/camstream/camstream.toml is $(stat -c %U:%G:%a /etc/camstream/camstream.toml), not root:camstream:640"
say "installed in ${install_s}s"

# As the service runs: its user, its groups, its environment.
as_service() {
  setpriv --reuid=camstream --regid=camstream --init-groups \
    env -i PATH=/usr/bin:/bin "${UNIT_ENV[@]}" "$@"
}

# --- check ------------------------------------------------------------------
mkdir "$work/all"
scripts/smoke-config.sh >"$work/all/camstream.toml"
chmod 755 "$work" "$work/all"
chmod 644 "$work/all/camstream.toml"
for config in /etc/camstream/camstream.toml "$work/all/camstream.toml"; do
  out=$(cd / && as_service /usr/bin/camstream check --config "$config" 2>&1) \
    || { echo "$out" >&2; fail "camstream check found errors in $config"; }
  say "camstream check, $config:"
  echo "$out" | sed 's/^/    /'
  if grep -q "is not installed" <<<"$out"; then
    fail "camstream check: GStreamer elements are missing although the package's Depends are installed"
  fi
  if grep -Eqv '^(ok|warning|error): |camera\(s\)' <<<"$out"; then
    fail "unexpected output from camstream check"
  fi
done

# --- serve ------------------------------------------------------------------
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
(cd / && exec setpriv --reuid=camstream --regid=camstream --init-groups \
  env -i PATH=/usr/bin:/bin "${UNIT_ENV[@]}" \
  /usr/bin/camstream serve --config /etc/camstream/camstream.toml --listen "127.0.0.1:$port") \
  >"$work/serve.log" 2>&1 &
server=$!
say "the installed camstream serves on 127.0.0.1:$port (pid $server)"
python3 scripts/smoke-stream.py "$port" --prefix deb-smoke --ready-timeout "$READY_TIMEOUT_S" \
  --cameras demo --camera demo --frames 2 \
  || { tail -n 30 "$work/serve.log" >&2; fail "HTTP checks failed"; }
kill -TERM "$server"
status=0
wait "$server" || status=$?
server=""
[ "$status" = 0 ] || { tail -n 30 "$work/serve.log" >&2; fail "exit status $status after SIGTERM"; }
grep -q "stopped" "$work/serve.log" || fail "no \"stopped\" in the log after SIGTERM"
say "SIGTERM: stopped, exit status 0"

# --- remove -----------------------------------------------------------------
start=$(date +%s)
DEBIAN_FRONTEND=noninteractive apt-get remove --purge -y -q camstream >"$work/apt.log" 2>&1 \
  || { tail -n 30 "$work/apt.log" >&2; fail "apt-get remove --purge camstream failed"; }
installed=0
remove_s=$(( $(date +%s) - start ))
if dpkg-query -W -f='${Status}' camstream 2>/dev/null | grep -q "installed"; then
  fail "camstream is still installed after apt-get remove --purge"
fi
for path in /usr/bin/camstream /etc/camstream /usr/lib/systemd/system/camstream.service \
  /usr/share/camstream; do
  [ ! -e "$path" ] || fail "$path is left after apt-get remove --purge"
done
left=$(installed_pids)
[ -z "$left" ] || fail "camstream processes left running after removal: $left"
say "removed with --purge in ${remove_s}s: no files, no process left"

say "PASSED (cargo-deb ${tool_s}s, package build ${build_s}s, install ${install_s}s, remove ${remove_s}s)"
