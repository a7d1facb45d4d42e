#!/usr/bin/env bash
# The unit tests through `ansible-test units`, on every ansible-core minor version meta/runtime.yml's
# requires_ansible admits, each in its own virtualenv under .build/units (made again when the requirements change).
# A version the package registry does not have for this Python fails here: requires_ansible must not claim it.
# Arguments go to ansible-test units (test paths, -v...).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-python3}
venvs=$root/.build/units
versions=$("$root/.venv/bin/python" "$root/tests/support/ansible_core_versions.py" "$root/meta/runtime.yml")
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
dest=$("$root/tests/collection-copy.sh" "$tmp")

for version in $versions; do
    venv=$venvs/ansible-core-$version
    spec="ansible-core>=$version,<$version.999"
    stamp=$(cat "$root/requirements.txt" "$root/tests/units-requirements.txt" | sha256sum | cut -c1-16)-$version
    if [ "$(cat "$venv/.stamp" 2>/dev/null)" != "$stamp" ]; then
        rm -rf "$venv"
        "$python" -m venv "$venv"
        "$venv/bin/pip" install -q --disable-pip-version-check "$spec" -r "$root/requirements.txt" -r "$root/tests/units-requirements.txt"
        echo "$stamp" > "$venv/.stamp"
    fi
    echo "== unit tests on ansible-core $("$venv/bin/python" -c "from ansible.release import __version__; print(__version__)")"
    (cd "$dest" && PATH=$venv/bin:$PATH ansible-test units --local --color no \
        --python "$("$venv/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')" "$@")
done
