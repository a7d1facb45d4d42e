# Copyright: multihv.cloud developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The node inventory's PropertyCollector retrieval, read as it arrives. Private to multihv.cloud: do not import.

properties.retrieve_inventory lets pyVmomi turn a whole RetrievePropertiesEx page into objects before one Record is
made: for 5,000 VMs that was 12 MiB more at the peak of an inventory run, above the host inventories it is measured
against (tests/benchmarks/inventory_vsphere.py, issue 20). Here the same calls (CreateContainerView and DestroyView
through pyVmomi; RetrievePropertiesEx and ContinueRetrievePropertiesEx as SOAP of our own on the session's cookie)
are parsed incrementally, each object becoming its Record as soon as its element ends and then dropped: the peak is
the Records, not the page. Same calls, same pages, same Records (managed object references as their ids, values
as pyVmomi gives them; enums as plain strings). Only simple property values are read (those of properties.PROPERTIES):
a data object in the answer is refused rather than guessed.
"""

from __future__ import annotations

import http.client
import xml.etree.ElementTree as ET
from xml.sax.saxutils import escape

from ansible_collections.multihv.cloud.plugins.module_utils import _errors as errors
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere.properties import PAGE_SIZE, PROPERTIES, Record, inventory_view
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere.vmomi import vim, vmodl

_SOAP = '{http://schemas.xmlsoap.org/soap/envelope/}'
_VIM = '{urn:vim25}'
_XSI_TYPE = '{http://www.w3.org/2001/XMLSchema-instance}type'
_ENVELOPE = ('<?xml version="1.0" encoding="UTF-8"?>'
             '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
             'xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
             '<soapenv:Body>%s</soapenv:Body></soapenv:Envelope>')
_INTEGERS = frozenset(('int', 'long', 'short', 'byte'))
_CHUNK = 1 << 16


def retrieve_inventory(session, content, properties=None):
    """Records of every object of the types in `properties` (PROPERTIES by default), as properties.retrieve_inventory
    gives them, on session (a logged-in Session; content its ServiceContent), through the same view."""
    properties = properties or PROPERTIES
    with inventory_view(content, properties) as view:
        return _Retrieval(session, content).records(view._moId, properties)  # pylint: disable=protected-access


def request_body(view_moid, properties, collector='propertyCollector'):
    """The RetrievePropertiesEx request: every object of the view with the paths of its type."""
    prop_set = ''.join('<propSet><type>%s</type>%s</propSet>' % (escape(kind), ''.join('<pathSet>%s</pathSet>' % escape(p) for p in paths))
                       for kind, paths in properties.items())
    object_set = ('<objectSet><obj type="ContainerView">%s</obj><skip>true</skip>'
                  '<selectSet xsi:type="TraversalSpec"><name>view</name><type>ContainerView</type><path>view</path>'
                  '<skip>false</skip></selectSet></objectSet>' % escape(view_moid))
    return _ENVELOPE % ('<RetrievePropertiesEx xmlns="urn:vim25"><_this type="PropertyCollector">%s</_this>'
                        '<specSet>%s%s</specSet><options><maxObjects>%d</maxObjects></options></RetrievePropertiesEx>'
                        % (escape(collector), prop_set, object_set, PAGE_SIZE))


def continue_body(token, collector='propertyCollector'):
    return _ENVELOPE % ('<ContinueRetrievePropertiesEx xmlns="urn:vim25"><_this type="PropertyCollector">%s</_this>'
                        '<token>%s</token></ContinueRetrievePropertiesEx>' % (escape(collector), escape(token)))


def value_of(val, path, shared=None):
    """A <val> element as pyVmomi's plain() value: ids for references, Python numbers and booleans, lists for arrays.
    shared: {text: text} through which the values that repeat (enums, references) are kept once."""
    kind = val.get(_XSI_TYPE, '').rsplit(':', 1)[-1]
    if kind.startswith('ArrayOf'):
        item = kind[len('ArrayOf'):]
        return [_simple(child.text or '', item, shared) for child in val]
    if len(val):
        raise errors.DriverError('the inventory retrieval got a %s for %s: only simple values are read' % (kind or 'data object', path))
    return _simple(val.text or '', kind, shared)


def _simple(text, kind, shared):
    lower = kind[:1].lower() + kind[1:]
    if lower in _INTEGERS:
        return int(text)
    if lower == 'boolean':
        return text in ('true', '1')
    if lower in ('float', 'double'):
        return float(text)
    if shared is None or lower == 'string':  # names, uuids, annotations: one of each
        return text
    return shared.setdefault(text, text)  # enums, ManagedObjectReference ids: a few values, thousands of times


class _Retrieval:
    """One paged retrieval: POSTs to the session's /sdk with its cookie, each answer parsed as it is read."""

    def __init__(self, session, content):
        self.session = session
        vcenter = session.vcenter
        self.host, self.port, self.timeout = vcenter.hostname, vcenter.port, vcenter.timeout
        self.collector = content.propertyCollector._moId  # pylint: disable=protected-access
        self.action = '"urn:vim25/%s"' % content.about.apiVersion

    def records(self, view_moid, properties):
        records = []
        token = self._page(request_body(view_moid, properties, self.collector), records)
        while token:
            token = self._page(continue_body(token, self.collector), records)
        return records

    def _page(self, body, records):
        """POST one request; its Records appended to records; the token of the next page (None: the last)."""
        connection = http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout, context=self.session.tls_context())
        try:
            connection.request('POST', '/sdk', body=body.encode('utf-8'), headers={
                'Content-Type': 'text/xml; charset=utf-8', 'SOAPAction': self.action, 'Cookie': self.session.http_cookie()})
            answer = connection.getresponse()
            if answer.status not in (200, 500):  # a SOAP fault comes with 500
                raise errors.DriverError('%s answered the inventory retrieval with HTTP %d %s' % (self.session.endpoint, answer.status, answer.reason))
            return _parse(answer, records)
        finally:
            connection.close()


def _parse(stream, records):
    """Read a RetrievePropertiesEx answer from stream, a Record per object appended to records as each ends; the token."""
    parser = ET.XMLPullParser(events=('start', 'end'))
    token, parent = None, None
    # Paths, enums and references repeat in every object: each kept once, not once per object (a third of the Records).
    shared = {}
    while True:
        chunk = stream.read(_CHUNK)
        if not chunk:
            break
        parser.feed(chunk)
        for event, element in parser.read_events():
            if event == 'start':
                if element.tag == _VIM + 'returnval':
                    parent = element
                continue
            if element.tag == _VIM + 'objects':
                records.append(_record(element, shared))
                if parent is not None:
                    parent.remove(element)  # what made the peak: the answer's objects kept until the end
            elif element.tag == _VIM + 'token':
                token = element.text
            elif element.tag == _SOAP + 'Fault':
                raise _fault(element)
    parser.close()
    return token


def _record(objects, shared):
    obj = objects.find(_VIM + 'obj')
    props = {}
    for prop in objects.iterfind(_VIM + 'propSet'):
        path = prop.findtext(_VIM + 'name')
        path = shared.setdefault(path, path)
        props[path] = value_of(prop.find(_VIM + 'val'), path, shared)
    kind = obj.get('type')
    return Record(shared.setdefault(kind, kind), obj.text, props)


def _fault(element):
    """The pyVmomi fault a SOAP fault stands for, so that Session.run treats it as for pyVmomi's own calls
    (NotAuthenticated: log in again once)."""
    message = element.findtext('faultstring') or 'a SOAP fault without a message'
    detail = element.find('detail')
    names = [child.get(_XSI_TYPE, child.tag.rsplit('}', 1)[-1]).rsplit(':', 1)[-1] for child in (detail if detail is not None else ())]
    if any(name.startswith('NotAuthenticated') for name in names):
        return vim.fault.NotAuthenticated(msg=message)
    return vmodl.MethodFault(msg=message)


__all__ = ['continue_body', 'request_body', 'retrieve_inventory', 'value_of']
