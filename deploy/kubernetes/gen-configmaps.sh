#!/usr/bin/env bash
# Regenerate the policy and schema ConfigMaps from the repository's policies/
# and schema/ directories.
#
#   deploy/kubernetes/gen-configmaps.sh           write configmap-policies.yaml
#                                                 and configmap-schema.yaml
#   deploy/kubernetes/gen-configmaps.sh --check   exit 1 if they are out of date
#
# Why a script: kustomize's configMapGenerator takes no globs and, by default,
# no files outside the kustomization directory, and its hashed names would roll
# the pods on every policy change instead of letting rolegate hot-reload.
#
# Every regular file directly in the source directory whose name ends in one of
# EXTENSIONS becomes one key of the ConfigMap, byte for byte; hidden files are
# skipped, other files are skipped with a warning. policies/tests/ (the policy
# test suite) is skipped. Other subdirectories are an error:
# a ConfigMap volume is flat, so their files would silently vanish.
#
# Environment overrides (for tests): POLICIES_SRC, SCHEMA_SRC, OUT_DIR.
# Needs bash, awk, od, cmp and, for the UTF-8 check, iconv. When python3 with
# PyYAML is present, the output is parsed back and compared with the sources.
set -euo pipefail
export LC_ALL=C

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)

POLICIES_SRC=${POLICIES_SRC:-$root/policies}
SCHEMA_SRC=${SCHEMA_SRC:-$root/schema}
OUT_DIR=${OUT_DIR:-$here}
# The file types rolegate's policy loader reads (src/policy/loader.rs).
EXTENSIONS=(cedar cedarschema toml)
# A ConfigMap object may not exceed 1 MiB; leave room for the YAML around it.
MAX_TOTAL_BYTES=$((900 * 1024))

die() { echo "gen-configmaps: $*" >&2; exit 1; }
warn() { echo "gen-configmaps: warning: $*" >&2; }

check=0
case "${1:-}" in
  "") ;;
  --check) check=1 ;;
  -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; exit 0 ;;
  *) die "unknown argument \`$1\` (expected --check)" ;;
esac

has_wanted_extension() {
  local name=$1 ext
  for ext in "${EXTENSIONS[@]}"; do
    [[ $name == *."$ext" ]] && return 0
  done
  return 1
}

# Refuse content that a YAML literal block cannot carry byte for byte.
check_content() {
  local file=$1 label=$2
  if [[ $(od -An -tx1 -N3 "$file" | tr -d ' \n') == efbbbf ]]; then
    die "\`$label\` starts with a byte order mark; save it as UTF-8 without BOM"
  fi
  # shellcheck disable=SC2094 # both sides only read the file
  if ! LC_ALL=C tr -d '\000-\010\013-\037\177' <"$file" | cmp -s - "$file"; then
    die "\`$label\` contains control characters or CR (CRLF line endings?); only tab and LF are allowed"
  fi
  if command -v iconv >/dev/null 2>&1; then
    iconv -f UTF-8 -t UTF-8 "$file" >/dev/null 2>&1 \
      || die "\`$label\` is not valid UTF-8"
  else
    warn "iconv not found: UTF-8 validity of \`$label\` not checked"
  fi
  # C1 controls (U+0080..U+009F, U+0085 is a YAML 1.1 line break), U+2028,
  # U+2029 (YAML 1.1 line breaks) and the non-characters U+FFFE, U+FFFF.
  if LC_ALL=C grep -q -e $'\xc2[\x80-\x9f]' -e $'\xe2\x80[\xa8\xa9]' -e $'\xef\xbf[\xbe\xbf]' "$file"; then
    die "\`$label\` contains a Unicode line separator or control character that YAML would not keep"
  fi
}

# Print one `  key: |...` entry with the file's exact bytes.
emit_entry() {
  local file=$1 key=$2 size first_byte last_two header
  size=$(wc -c <"$file" | tr -d ' ')
  if [[ $size -eq 0 ]]; then
    printf '  %s: ""\n' "$key"
    return
  fi
  first_byte=$(od -An -tx1 -N1 "$file" | tr -d ' \n')
  last_two=$(tail -c 2 "$file" | od -An -tx1 | tr -d ' \n')

  header="|"
  # An explicit indentation indicator (content is indented 2 more than the
  # key) when the first line is empty or starts with a space, where YAML's
  # automatic detection would misread the indentation.
  if [[ $first_byte == 20 || $first_byte == 0a ]]; then
    header+="2"
  fi
  # Chomping: "-" no final newline, default exactly one, "+" keep trailing
  # empty lines (and a file that is nothing but newlines).
  if [[ $last_two != *0a ]]; then
    header+="-"
  elif [[ $last_two == 0a0a || $size -eq 1 ]]; then
    header+="+"
  fi

  printf '  %s: %s\n' "$key" "$header"
  awk '{ if ($0 == "") print ""; else print "    " $0 }' "$file"
}

# generate NAME SRC_DIR SRC_LABEL OUT_FILE
generate() {
  local name=$1 src=$2 label=$3 out=$4 entry base total=0
  [[ -d $src ]] || die "source directory \`$src\` does not exist"

  local files=()
  while IFS= read -r -d '' entry; do
    base=${entry##*/}
    [[ $base == .* ]] && continue
    # `policies/tests/` holds the request-level policy tests (`rolegate test`):
    # they run in CI, not in the pod, so they stay out of the ConfigMap.
    if [[ -d $entry && $label/$base == policies/tests ]]; then
      continue
    fi
    if [[ -d $entry ]]; then
      die "\`$label/$base\` is a directory; a ConfigMap volume is flat, move its files up"
    fi
    [[ -f $entry ]] || die "\`$label/$base\` is not a regular file"
    if ! has_wanted_extension "$base"; then
      warn "skipping \`$label/$base\` (not one of: ${EXTENSIONS[*]})"
      continue
    fi
    [[ $base =~ ^[-._a-zA-Z0-9]+$ && ${#base} -le 253 ]] \
      || die "\`$label/$base\` is not a valid ConfigMap key (letters, digits, - _ . only)"
    check_content "$entry" "$label/$base"
    total=$((total + $(wc -c <"$entry" | tr -d ' ')))
    files+=("$entry")
  done < <(find "$src" -mindepth 1 -maxdepth 1 -print0 | sort -z)

  [[ ${#files[@]} -gt 0 ]] || die "no files to ship in \`$label\`"
  [[ $total -le $MAX_TOTAL_BYTES ]] \
    || die "\`$label\` holds $total bytes, more than a ConfigMap can carry ($MAX_TOTAL_BYTES)"

  {
    echo "# GENERATED by deploy/kubernetes/gen-configmaps.sh from $label/ -- do not edit."
    echo "# Mounted as a whole directory at /etc/rolegate/${name#rolegate-} (see deployment.yaml)."
    echo "apiVersion: v1"
    echo "kind: ConfigMap"
    echo "metadata:"
    echo "  name: $name"
    echo "  labels:"
    echo "    app.kubernetes.io/name: stream-api"
    echo "    app.kubernetes.io/component: rolegate-$label"
    echo "data:"
    for entry in "${files[@]}"; do
      emit_entry "$entry" "${entry##*/}"
    done
  } >"$out"

  verify "$out" "${files[@]}"
}

# Parse the output back and compare every value with its source file.
verify() {
  local out=$1
  shift
  if ! command -v python3 >/dev/null 2>&1 || ! python3 -c 'import yaml' 2>/dev/null; then
    return 0
  fi
  python3 - "$out" "$@" <<'PY' || die "round trip of \`$1\` failed"
import os, sys, yaml
out, files = sys.argv[1], sys.argv[2:]
with open(out, encoding="utf-8") as f:
    doc = yaml.safe_load(f)
data = doc.get("data") or {}
want = {os.path.basename(p): open(p, encoding="utf-8", newline="").read() for p in files}
if data != want:
    for k in sorted(set(data) | set(want)):
        if data.get(k) != want.get(k):
            print(f"gen-configmaps: {out}: key {k!r} does not round-trip", file=sys.stderr)
    sys.exit(1)
PY
}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

generate rolegate-policies "$POLICIES_SRC" policies "$work/configmap-policies.yaml"
generate rolegate-schema "$SCHEMA_SRC" schema "$work/configmap-schema.yaml"

status=0
for f in configmap-policies.yaml configmap-schema.yaml; do
  if [[ $check -eq 1 ]]; then
    if ! cmp -s "$work/$f" "$OUT_DIR/$f"; then
      echo "gen-configmaps: $OUT_DIR/$f is out of date; run deploy/kubernetes/gen-configmaps.sh" >&2
      status=1
    fi
  else
    cp "$work/$f" "$OUT_DIR/$f"
    echo "gen-configmaps: wrote $OUT_DIR/$f" >&2
  fi
done
exit "$status"
