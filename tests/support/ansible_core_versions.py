"""The ansible-core minor versions meta/runtime.yml's requires_ansible admits, one per line (tests/units.sh tests
the unit tests on each). requires_ansible needs an upper bound: a version this machine cannot test is not claimed."""

from __future__ import annotations

import pathlib
import sys

import yaml
from packaging.specifiers import SpecifierSet
from packaging.version import Version


def admitted(requires_ansible: str) -> list[str]:
    spec = SpecifierSet(requires_ansible)
    lower = [Version(s.version) for s in spec if s.operator == '>=']
    upper = [Version(s.version) for s in spec if s.operator == '<']
    if len(lower) != 1 or len(upper) != 1 or lower[0].major != upper[0].major:
        raise ValueError('requires_ansible %r must be ">=X.Y.0,<X.Z.0"' % requires_ansible)
    (low,), (high,) = lower, upper
    return ['%d.%d' % (low.major, minor) for minor in range(low.minor, high.minor)]


def main(argv):
    runtime = pathlib.Path(argv[1]) if len(argv) > 1 else pathlib.Path(__file__).resolve().parents[2] / 'meta' / 'runtime.yml'
    print('\n'.join(admitted(yaml.safe_load(runtime.read_text())['requires_ansible'])))


if __name__ == '__main__':
    main(sys.argv)
