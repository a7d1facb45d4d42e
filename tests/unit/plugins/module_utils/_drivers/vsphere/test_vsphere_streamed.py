"""The vSphere node inventory read as it arrives (streamed.py, issue 20): answers as vCenter writes them, parsed in
small chunks; the lab's simulator checks the same Records against pyVmomi's (tests/integration/test_vsphere_driver.py)."""

from __future__ import annotations

import collections
import io
import xml.etree.ElementTree as ET

import pytest
from pyVmomi import vim, vmodl

from ansible_collections.multihv.cloud.plugins.module_utils import _errors as errors
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere import streamed

ENVELOPE = ('<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
            'xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
            '<soapenv:Body>%s</soapenv:Body></soapenv:Envelope>')
ANSWER = ENVELOPE % (
    '<RetrievePropertiesExResponse xmlns="urn:vim25"><returnval><token>page-2</token>'
    '<objects><obj type="HostSystem">host-21</obj>'
    '<propSet><name>datastore</name><val xsi:type="ArrayOfManagedObjectReference">'
    '<ManagedObjectReference type="Datastore" xsi:type="ManagedObjectReference">datastore-1</ManagedObjectReference>'
    '<ManagedObjectReference type="Datastore" xsi:type="ManagedObjectReference">datastore-2</ManagedObjectReference></val></propSet>'
    '<propSet><name>runtime.connectionState</name><val xsi:type="HostSystemConnectionState">connected</val></propSet>'
    '<propSet><name>runtime.inMaintenanceMode</name><val xsi:type="xsd:boolean">false</val></propSet>'
    '<propSet><name>summary.hardware.memorySize</name><val xsi:type="xsd:long">4294430720</val></propSet>'
    '<propSet><name>summary.hardware.numCpuThreads</name><val xsi:type="xsd:short">4</val></propSet>'
    '</objects>'
    '<objects><obj type="VirtualMachine">vm-7</obj>'
    '<propSet><name>runtime.host</name><val type="HostSystem" xsi:type="ManagedObjectReference">host-21</val></propSet>'
    '<propSet><name>config.annotation</name><val xsi:type="xsd:string">a &lt;b&gt; &amp; c</val></propSet>'
    '<propSet><name>summary.config.template</name><val xsi:type="xsd:boolean">true</val></propSet>'
    '</objects></returnval></RetrievePropertiesExResponse>')


class Chunked(io.BytesIO):
    """An HTTP answer read a few bytes at a time: objects end across chunk boundaries."""

    def read(self, size=-1):
        return super().read(min(size, 7) if size and size > 0 else 7)


def test_an_answer_read_in_small_chunks_gives_records_with_pythons_types_and_the_next_pages_token():
    records = []
    assert streamed._parse(Chunked(ANSWER.encode()), records) == 'page-2'  # pylint: disable=protected-access
    host, vm = records
    assert (host.kind, host.moid, vm.kind, vm.moid) == ('HostSystem', 'host-21', 'VirtualMachine', 'vm-7')
    assert host.props == {'datastore': ['datastore-1', 'datastore-2'], 'runtime.connectionState': 'connected',
                          'runtime.inMaintenanceMode': False, 'summary.hardware.memorySize': 4294430720,
                          'summary.hardware.numCpuThreads': 4}
    assert vm.props == {'runtime.host': 'host-21', 'config.annotation': 'a <b> & c', 'summary.config.template': True}


def test_the_last_page_has_no_token_and_an_empty_answer_no_records():
    records = []
    answer = ENVELOPE % '<RetrievePropertiesExResponse xmlns="urn:vim25"></RetrievePropertiesExResponse>'
    assert streamed._parse(io.BytesIO(answer.encode()), records) is None and records == []  # pylint: disable=protected-access


def fault(detail):
    return (ENVELOPE % ('<soapenv:Fault><faultcode>ServerFaultCode</faultcode><faultstring>the session is not authenticated</faultstring>'
                        '<detail>%s</detail></soapenv:Fault>' % detail)).encode()


def test_a_dropped_session_is_pyvmomis_not_authenticated_fault_so_that_the_session_logs_in_again():
    with pytest.raises(vim.fault.NotAuthenticated):
        streamed._parse(io.BytesIO(fault('<NotAuthenticatedFault xmlns="urn:vim25" xsi:type="NotAuthenticated"/>')), [])  # pylint: disable=protected-access
    with pytest.raises(vmodl.MethodFault) as caught:
        streamed._parse(io.BytesIO(fault('<InvalidArgumentFault xmlns="urn:vim25" xsi:type="InvalidArgument"/>')), [])  # pylint: disable=protected-access
    assert not isinstance(caught.value, vim.fault.NotAuthenticated) and caught.value.msg == 'the session is not authenticated'


def test_a_data_object_value_is_refused_not_guessed():
    val = ET.fromstring('<val xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:type="HostListSummary"><host>x</host></val>')
    with pytest.raises(errors.DriverError, match='got a HostListSummary for summary: only simple values are read'):
        streamed.value_of(val, 'summary')


def test_the_requests_ask_for_every_path_of_every_type_of_the_view_in_one_page_of_page_size():
    properties = collections.OrderedDict([('HostSystem', ('name', 'runtime.host')), ('Datastore', ('summary.name',))])
    body = ET.fromstring(streamed.request_body('session[1]<view>', properties, collector='propertyCollector'))
    ns = {'v': 'urn:vim25'}
    request = body.find('.//v:RetrievePropertiesEx', ns)
    assert request.findtext('v:_this', namespaces=ns) == 'propertyCollector'
    assert [(p.findtext('v:type', namespaces=ns), [x.text for x in p.findall('v:pathSet', ns)])
            for p in request.findall('v:specSet/v:propSet', ns)] == [('HostSystem', ['name', 'runtime.host']), ('Datastore', ['summary.name'])]
    assert request.findtext('v:specSet/v:objectSet/v:obj', namespaces=ns) == 'session[1]<view>'  # escaped, read back as given
    assert int(request.findtext('v:options/v:maxObjects', namespaces=ns)) == streamed.PAGE_SIZE
    follow = ET.fromstring(streamed.continue_body('tok&1')).find('.//v:ContinueRetrievePropertiesEx', ns)
    assert follow.findtext('v:token', namespaces=ns) == 'tok&1'
