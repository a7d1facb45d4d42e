#!/usr/bin/env bash
# Copies the checkout to DIR/ansible_collections/multihv/cloud (the repo root is the collection root; ansible-test
# wants the collection at that path) and prints that path: what git knows about (tracked, or new and not ignored),
# so no lab state, virtualenv or build output.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dest=$1/ansible_collections/multihv/cloud
mkdir -p "$dest"
# shellcheck disable=SC2016  # the inner sh expands its own "$f"
(cd "$root" && git ls-files -z --cached --others --exclude-standard) \
    | (cd "$root" && xargs -0 -r sh -c 'for f; do [ -e "$f" ] && printf "%s\0" "$f"; done' sh) \
    | (cd "$root" && xargs -0 -r cp --parents -t "$dest")
echo "$dest"
