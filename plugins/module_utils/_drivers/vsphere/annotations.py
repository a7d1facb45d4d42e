# Copyright: multihv.cloud developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Which VMs are the cloud's instances: the annotation marker. Private to multihv.cloud: do not
import.

A VM is the cloud's instance when its annotation carries the marker line
`multihv.cloud instance <uuid>` (followed by a line of JSON) and its BIOS uuid (config.uuid)
is that uuid; a copy of it (a new uuid) is not. Pure functions, no pyVmomi.
"""

from __future__ import annotations

import json
import re
import uuid as uuidlib

# The marker line that makes a VM the cloud's instance; the annotation's next line is JSON.
MARKER = 'multihv.cloud instance'
_MARKER_LINE = re.compile(r'^multihv\.cloud instance (\S+)[ \t]*\r?$', re.MULTILINE)


def normal_uuid(value):
    """A UUID in its canonical lower-case form; None when value is not one."""
    try:
        return str(uuidlib.UUID(str(value)))
    except (TypeError, ValueError):
        return None


def format_annotation(instance_uuid, data):
    """The annotation of a managed VM: the marker line, then the JSON of data on one line."""
    return '%s %s\n%s' % (MARKER, instance_uuid, json.dumps(data, sort_keys=True, separators=(',', ':'), default=str))


def parse_annotation(text):
    """(uuid, data) of an annotation; (None, {}) when it carries no marker line with a UUID.
    A marker whose JSON line is missing or damaged (edited by hand) still marks the VM."""
    match = _MARKER_LINE.search(text or '')
    instance = normal_uuid(match.group(1)) if match else None
    if instance is None:
        return None, {}
    following = text[match.end():].lstrip('\r\n').split('\n', 1)[0]
    try:
        data = json.loads(following)
    except ValueError:
        data = {}
    return instance, data if isinstance(data, dict) else {}


def without_marker(text):
    """The annotation with the marker line and its JSON line removed (what the VM said before it was an instance)."""
    match = _MARKER_LINE.search(text or '')
    if match is None:
        return text or ''
    rest = text[match.end():].lstrip('\r\n')
    rest = rest.split('\n', 1)[1] if '\n' in rest else ''
    return (text[:match.start()] + rest).strip('\r\n')


def annotation_for(spec):
    """What a node alone needs to tell what the instance is (InstanceSpec.metadata included);
    not user_data, which may hold secrets and has no size bound."""
    return format_annotation(spec.uuid, {'name': spec.name, 'hostname': spec.hostname, 'image': spec.image,
                                         'node': spec.node, 'metadata': spec.metadata})


def managed_uuid(props):
    """The instance uuid of a VM the cloud manages, else None: not a template, a marker, and the
    marker's uuid is the VM's own BIOS uuid (a copy of an instance gets a new one)."""
    if props.get('summary.config.template'):
        return None
    instance = parse_annotation(props.get('config.annotation'))[0]
    if instance is None or instance != normal_uuid(props.get('config.uuid')):
        return None
    return instance


__all__ = ['MARKER', 'annotation_for', 'format_annotation', 'managed_uuid', 'normal_uuid', 'parse_annotation']
