"""A vSphere VM's guestinfo read back through pyVmomi and decoded the way cloud-init's VMware
datasource decodes it. Written apart from the driver's code on purpose: it checks what the
driver sent, it does not reuse how the driver made it.
"""

from __future__ import annotations

import base64
import gzip

DOCUMENTS = ('metadata', 'userdata', 'vendordata')


def extra_config(si, vm):
    """{key: value} of the VM's config.extraConfig, read with one RetrievePropertiesEx.
    Keys are lowercased (.vmx keys are case-insensitive) and the last entry of a key wins
    (vcsim 0.24.2 appends a reconfigured key instead of replacing it)."""
    from pyVmomi import vim, vmodl  # pylint: disable=import-outside-toplevel
    collector = vmodl.query.PropertyCollector
    spec = collector.FilterSpec(objectSet=[collector.ObjectSpec(obj=vm, skip=False)],
                                propSet=[collector.PropertySpec(type=vim.VirtualMachine, pathSet=['config.extraConfig'])])
    result = si.RetrieveContent().propertyCollector.RetrievePropertiesEx(specSet=[spec], options=collector.RetrieveOptions())
    values = {}
    for prop in result.objects[0].propSet if result else ():
        for option in prop.val:
            values[option.key.lower()] = option.value
    return values


def decode(value, encoding):
    """A guestinfo value as cloud-init reads it: None when empty or '---' (cloud-init's
    cleared value), else decoded by its .encoding (gzip+base64, base64, or none)."""
    value = (value or '').rstrip()
    if not value or value == '---':
        return None
    if encoding in ('gzip+base64', 'gz+b64'):
        return gzip.decompress(base64.b64decode(value)).decode('utf-8')
    if encoding in ('base64', 'b64'):
        return base64.b64decode(value).decode('utf-8')
    return value


def documents(si, vm):
    """{'metadata', 'userdata', 'vendordata': text or None} that cloud-init would find in the VM."""
    values = extra_config(si, vm)
    return dict((name, decode(values.get('guestinfo.' + name), values.get('guestinfo.%s.encoding' % name))) for name in DOCUMENTS)
