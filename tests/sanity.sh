#!/usr/bin/env bash
# ansible-test sanity on a copy of the collection at ansible_collections/multihv/cloud
# in a temporary directory (the repo root is the collection root), with no ignore file.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
dest=$("$root/tests/collection-copy.sh" "$tmp")

# ansible-test bootstraps pip in its virtualenvs with a get-pip script it downloads
# from a host these machines cannot reach. This stand-in does the same job with the
# standard library's ensurepip, then installs what ansible-test asked for.
cache=$HOME/.ansible/test/cache
mkdir -p "$cache"
cat > "$cache/get_pip_24_2.py" <<'PY'
"""Stand-in for get-pip.py: ensurepip, then pip install the requested packages."""
import os
import subprocess
import sys

args = [a for a in sys.argv[1:] if a not in ('--no-setuptools', '--no-wheel')]
subprocess.run([sys.executable, '-m', 'ensurepip', '--upgrade', '--default-pip'], check=True, stdout=subprocess.DEVNULL)
# ensurepip points pip at /dev/null for its config; pip then loses /etc/pip.conf and its CA bundle.
for name in ('PIP_CONFIG_FILE', 'ENSUREPIP_OPTIONS'):
    os.environ.pop(name, None)
sys.exit(subprocess.call([sys.executable, '-m', 'pip', 'install', '--disable-pip-version-check'] + args))
PY

cd "$dest"
# ansible-test wants a git-free tree here; it lists files by walking the directory.
ansible-test sanity --venv --python 3.11 --color no "$@"
