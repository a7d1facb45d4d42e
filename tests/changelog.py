"""The changelog as antsibull-changelog makes it: `antsibull-changelog lint` on the fragments, then a release made
on a copy of the collection, whose "New ..." sections must announce every module, inventory plugin, role and
playbook the collection ships (modules and plugins from their version_added, roles and playbooks from the
fragments' `add object.*`), while no fragment's major or minor changes announce one of them as new."""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys
import tempfile

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[1]
BIN = pathlib.Path(sys.executable).parent
ANNOUNCED_BY_HAND = re.compile(r'\bnew (?:modules?|roles?|playbooks?|inventory plugins?|plugins?)\b', re.I)


def names(paths):
    return sorted('multihv.cloud.' + p.stem for p in paths if not p.name.startswith('_'))


def shipped():
    """What the collection ships, by the changelog section that must announce it."""
    return {'New Modules': names((ROOT / 'plugins' / 'modules').glob('*.py')),
            'Inventory': names((ROOT / 'plugins' / 'inventory').glob('*.py')),
            'New Roles': names(p for p in (ROOT / 'roles').iterdir() if p.is_dir()),
            'New Playbooks': names((ROOT / 'playbooks').glob('*.yml'))}


def section(text, title):
    """The '- name - description' entries under a section title of the generated CHANGELOG.rst."""
    match = re.search(r'^%s\n[-~]+\n\n((?:- .*\n)+)' % re.escape(title), text, re.M)
    return sorted(line[2:].split(' - ')[0] for line in match.group(1).splitlines()) if match else []


def hand_announcements():
    found = []
    for fragment in sorted((ROOT / 'changelogs' / 'fragments').glob('*.yml')):
        for kind in ('major_changes', 'minor_changes'):
            for entry in (yaml.safe_load(fragment.read_text()) or {}).get(kind) or []:
                if ANNOUNCED_BY_HAND.search(entry):
                    found.append('%s (%s): %s' % (fragment.name, kind, entry[:80]))
    return found


def main():
    subprocess.run([str(BIN / 'antsibull-changelog'), 'lint'], cwd=ROOT, check=True)
    problems = hand_announcements()
    with tempfile.TemporaryDirectory() as tmp:
        copy = pathlib.Path(subprocess.run([str(ROOT / 'tests' / 'collection-copy.sh'), tmp], check=True,
                                           capture_output=True, text=True).stdout.strip())
        version = yaml.safe_load((copy / 'galaxy.yml').read_text())['version']
        # It finds the modules and plugins with ansible-doc.
        env = dict(os.environ, PATH='%s:%s' % (BIN, os.environ.get('PATH', '')))
        subprocess.run([str(BIN / 'antsibull-changelog'), 'release', '--version', version], cwd=copy, check=True, env=env)
        text = (copy / 'CHANGELOG.rst').read_text()
    for title, names in shipped().items():
        announced = section(text, title)
        if announced != names:
            problems.append('%s announces %s, the collection ships %s' % (title, announced, names))
    if problems:
        sys.exit('changelog:\n  ' + '\n  '.join(problems))
    print('changelog: fragments lint clean; the release announces %d modules, plugins, roles and playbooks'
          % sum(len(n) for n in shipped().values()))


if __name__ == '__main__':
    main()
