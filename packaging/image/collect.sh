#!/usr/bin/env bash
# Picks out of an install of Debian's GStreamer packages the files camstream
# needs at run time, for the container image's runtime stage (see the
# Dockerfile's `plugins` stage, where this runs):
#   - the plugin file of each element (or plugin) named in ELEMENTS;
#   - the files GStreamer, GIO and souphttpsrc open by name at run time,
#     which no linker records (below);
#   - the shared libraries all of these and BINARY load, recursively (ldd).
# Each is copied to DEST under its own path (with /lib spelled /usr/lib: the
# runtime has merged /usr), except files BASE_FILES lists (the runtime base
# has them already). Also copies each source package's copyright file and
# writes DEST/usr/share/doc/camstream/image-files.txt: every copied file with
# the Debian package and version it came from.
#
# Fails, naming what is wrong, when a name is no installed element or plugin,
# or a file needs a library or a symbol that is missing.
#
# Usage: collect.sh ELEMENTS BASE_FILES BINARY DEST
set -euo pipefail

[ $# -eq 4 ] || { echo "usage: $0 ELEMENTS BASE_FILES BINARY DEST" >&2; exit 2; }
elements=$1 base_files=$2 binary=$3 dest=$4

say() { echo "collect: $*"; }
die() { echo "collect: $*" >&2; exit 1; }

# Files loaded with dlopen or run as helpers, as `package pattern`: the file
# of that installed package whose path ends with the pattern. Found through
# dpkg, so no architecture's library directory is written here.
DLOPENED=(
  # GStreamer scans plugins in this helper process (in-process without it,
  # where one crashing plugin takes camstream down).
  "libgstreamer1.0-0 /gst-plugin-scanner"
  # GIO's TLS backend: https:// (souphttpsrc) and rtsps:// (rtspsrc).
  "glib-networking /gio/modules/libgiognutls.so"
  # souphttpsrc loads libsoup by name when it first runs (GStreamer 1.22).
  "libsoup-3.0-0 /libsoup-3.0.so.0"
)

files=()
declare -A listed=()
add() { [ -n "${listed[$1]+x}" ] || { listed[$1]=1; files+=("$1"); }; }

# --- plugin files ---------------------------------------------------------
# First use scans every installed plugin; then each lookup is quick.
while read -r name; do
  info=$(gst-inspect-1.0 "$name" 2>/dev/null) || info=""
  file=$(awk '/^  Filename/ {print $2; exit}' <<<"$info")
  [ -n "$file" ] || die "$elements names \"$name\", which no installed GStreamer package provides as an element or plugin"
  add "$file"
done < <(sed -e 's/#.*//' -e 's/[[:space:]]*$//' -e '/^$/d' "$elements")

for entry in "${DLOPENED[@]}"; do
  read -r package pattern <<<"$entry"
  list=$(dpkg -L "$package") || die "package $package is not installed"
  file=$(awk -v p="$pattern" 'substr($0, length($0) - length(p) + 1) == p {print; exit}' <<<"$list")
  [ -n "$file" ] || die "package $package has no file ending in $pattern"
  add "$file"
done

# --- the library closure ----------------------------------------------------
# `ldd -r` also resolves every symbol, so a library that is present but too
# old or built without something a plugin calls fails here, not at run time.
declare -A seen=()
closure=()
for file in "${files[@]}" "$binary"; do
  out=$(ldd -r "$file" 2>&1) || die "ldd failed for $file: $out"
  if grep -Eq 'not found|undefined symbol' <<<"$out"; then
    die "$file cannot load: $(grep -E 'not found|undefined symbol' <<<"$out" | head -n 5)"
  fi
  while read -r lib; do
    [ -n "${seen[$lib]+x}" ] || { seen[$lib]=1; closure+=("$lib"); }
  done < <(awk '$2 == "=>" && $3 ~ /^\// {print $3}' <<<"$out")
done

# --- copy -------------------------------------------------------------------
# The path a file has on merged /usr: its directory resolved, its own name
# kept (a library's soname, which may be a symlink to the versioned file).
canonical() { echo "$(cd "$(dirname "$1")" && pwd -P)/$(basename "$1")"; }

# The package that installed a file ("-" for none); dpkg may record it
# under /lib or /usr/lib.
package_of() {
  local real path found
  real=$(readlink -f "$1")
  for path in "$1" "$real" "${real#/usr}" "/usr${real}"; do
    if found=$(dpkg -S "$path" 2>/dev/null); then
      found=${found%%$'\n'*}
      found=${found%%: *}
      echo "${found%%,*}"
      return 0
    fi
  done
  echo "-"
}

declare -A base=() copied=() packages=()
while read -r path; do base[$path]=1; done <"$base_files"

manifest=()
bytes=0
for file in "${files[@]}" "${closure[@]}"; do
  path=$(canonical "$file")
  [ -z "${base[$path]+x}" ] && [ -z "${copied[$path]+x}" ] || continue
  copied[$path]=1
  mkdir -p "$dest$(dirname "$path")"
  cp -L --preserve=mode,timestamps "$file" "$dest$path"
  bytes=$(( bytes + $(stat -c %s "$dest$path") ))
  package=$(package_of "$file")
  if [ "$package" != - ]; then
    packages[$package]=1
    package="$package $(dpkg-query -W -f '${Version}' "$package")"
  fi
  manifest+=("$path $package")
done

# Copyright files: the licences of what the image redistributes.
for package in "${!packages[@]}"; do
  copyright=/usr/share/doc/${package%%:*}/copyright
  if [ -f "$copyright" ] && [ -z "${base[$copyright]+x}" ]; then
    mkdir -p "$dest$(dirname "$copyright")"
    cp -L "$copyright" "$dest$copyright"
  fi
done

mkdir -p "$dest/usr/share/doc/camstream"
{
  echo "# Files copied into this image from Debian packages by packaging/image/collect.sh:"
  echo "# path package version"
  printf '%s\n' "${manifest[@]}" | sort
} >"$dest/usr/share/doc/camstream/image-files.txt"

say "${#files[@]} plugin and helper files, ${#closure[@]} libraries; copied ${#manifest[@]} files" \
  "($(( bytes / 1000000 )) MB) from ${#packages[@]} packages, the rest is in the runtime base"
