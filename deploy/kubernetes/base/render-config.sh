#!/bin/sh
# Renders camstream.toml for a camstream pod. The init container of the edge
# DaemonSet and of the relay Deployment runs it before camstream starts:
#
#   render-config.sh SECRETS_DIR OUTPUT TEMPLATE [TEMPLATE...]
#
# The first TEMPLATE that exists is rendered: the edge passes its node's own
# file (<node name>.toml in the ConfigMap) before the shared camstream.toml,
# so one DaemonSet serves nodes with different cameras.
#
# Why: camstream reads camera passwords and [server.auth] tokens only inline
# in its config file, and a ConfigMap is no place for them. So the ConfigMap
# holds the config with placeholders, the Secret holds the values, and the
# rendered file goes to a memory-backed emptyDir that only this pod sees.
#
# TEMPLATE is a file of the ConfigMap. Every ${NAME} in it is replaced
# by the content of SECRETS_DIR/NAME (a key of the pod's Secret, mounted as
# files), trailing newlines removed. NAME is capital letters, digits and _.
# Comment lines (first non-blank character #) are copied as they are. Keys
# whose names are not such names (tls.key, edge-1-token) are files that
# camstream reads itself, and are left alone.
#
# Refused, naming the key and never the value: a placeholder that is not a
# NAME or has no key; a value holding a double quote, a backslash or a
# control character, which would end or break the TOML string (percent-encode
# such characters in a URL's password: `"` is %22, `\` is %5C, `@` is %40).
#
# Needs only /bin/sh and awk: the image's debian:bookworm-slim base has both
# (dash and mawk are Priority: required).
set -eu
export LC_ALL=C

if [ $# -lt 3 ]; then
  echo "usage: $0 SECRETS_DIR OUTPUT TEMPLATE [TEMPLATE...]" >&2
  exit 2
fi
secrets=$1
output=$2
shift 2
template=
for candidate in "$@"; do
  if [ -f "$candidate" ]; then
    template=$candidate
    break
  fi
done
if [ -z "$template" ]; then
  echo "render-config: none of $* exists: the ConfigMap needs a camstream.toml" >&2
  exit 1
fi

if [ ! -d "$secrets" ]; then
  echo "render-config: secrets directory $secrets does not exist: mount the pod's Secret there" >&2
  exit 1
fi

for file in "$secrets"/*; do
  [ -f "$file" ] || continue
  name=${file##*/}
  case $name in
    [0-9]* | *[!A-Z0-9_]*) continue ;;
  esac
  # Through the environment, not awk -v (which would read backslashes as
  # escapes) nor the command line (which `ps` shows).
  export "CAMSTREAM_SECRET_$name=$(cat "$file")"
done

umask 077
tmp="$output.tmp"
if ! awk -v template="$template" '
  /^[[:space:]]*#/ { print; next }
  {
    rest = $0
    out = ""
    while (match(rest, /\$\{[^}]*\}/)) {
      name = substr(rest, RSTART + 2, RLENGTH - 3)
      key = "CAMSTREAM_SECRET_" name
      value = ""
      if (name !~ /^[A-Z_][A-Z0-9_]*$/) {
        printf "render-config: %s:%d: ${%s} is not a placeholder name: use capital letters, digits and _\n", template, NR, name > "/dev/stderr"
        failed = 1
      } else if (!(key in ENVIRON)) {
        printf "render-config: %s:%d: ${%s} has no value: add the key %s to the Secret\n", template, NR, name, name > "/dev/stderr"
        failed = 1
      } else if (ENVIRON[key] ~ /["\\[:cntrl:]]/) {
        printf "render-config: %s:%d: the Secret key %s holds a double quote, a backslash or a control character, which would break the TOML string: percent-encode it\n", template, NR, name > "/dev/stderr"
        failed = 1
      } else {
        value = ENVIRON[key]
      }
      out = out substr(rest, 1, RSTART - 1) value
      rest = substr(rest, RSTART + RLENGTH)
    }
    print out rest
  }
  END { exit failed }
' "$template" >"$tmp"; then
  rm -f "$tmp"
  exit 1
fi
mv "$tmp" "$output"
echo "render-config: wrote $output from $template"
