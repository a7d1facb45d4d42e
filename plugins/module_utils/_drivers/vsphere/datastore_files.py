# Copyright: multihv.cloud developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Files in a vCenter's datastores, through its datastore file access over HTTPS (issue 19). Private to
multihv.cloud: do not import.

`https://<vcenter>:<port>/folder/<path in the datastore>?dcPath=<datacenter>&dsName=<datastore>` with the SOAP
session's cookie: vCenter and vcsim both serve it, and it is reachable from the controller, which holds the
files. PUT uploads one file (the directory is made as needed); deletion goes through the FileManager (SOAP), which
removes a whole directory. The session cookie is a secret: no message holds it.
"""

from __future__ import annotations

import http.client
import os
import time
import urllib.parse

from ansible_collections.multihv.cloud.plugins.module_utils import _errors as errors
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere.properties import stub
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere.tasks import wait_task
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere.vmomi import vim

CHUNK = 1024 * 1024


def datastore_path(datastore, path):
    """The '[datastore] path' form vSphere's API takes for a file of a datastore."""
    return '[%s] %s' % (datastore, path)


def folder_url(hostname, port, datacenter, datastore, path):
    """The URL of file `path` (relative to the datastore's root, '/'-separated) of datastore `datastore` in
    datacenter `datacenter` (its inventory path: the name, or folders/name), on vCenter hostname:port."""
    if not path or path.startswith('/') or '..' in path.split('/'):
        raise errors.DriverError('%r is not a path inside a datastore' % (path,))
    host = '[%s]' % hostname if ':' in hostname else hostname  # an IPv6 literal
    query = urllib.parse.urlencode({'dcPath': datacenter, 'dsName': datastore}, quote_via=urllib.parse.quote)
    return 'https://%s:%d/folder/%s?%s' % (host, port, urllib.parse.quote(path, safe='/'), query)


def upload(session, url, source, deadline, progress=None):
    """PUT the controller file `source` to url (folder_url) with the session's cookie, streaming it in CHUNKs;
    progress(bytes sent) after each. errors.DriverError when vCenter refuses or the deadline passes; errors.Unreachable
    when it does not answer."""
    split = urllib.parse.urlsplit(url)
    size = os.path.getsize(source)
    connection = http.client.HTTPSConnection(split.hostname, split.port, timeout=session.vcenter.timeout, context=session.tls_context())
    where = '%s (datastore file %s)' % (session.endpoint, urllib.parse.unquote(split.path))
    try:
        connection.putrequest('PUT', '%s?%s' % (split.path, split.query))
        connection.putheader('Content-Type', 'application/octet-stream')
        connection.putheader('Content-Length', str(size))
        connection.putheader('Cookie', session.http_cookie())
        connection.endheaders()
        sent = 0
        with open(source, 'rb') as handle:
            while True:
                chunk = handle.read(CHUNK)
                if not chunk:
                    break
                connection.send(chunk)
                sent += len(chunk)
                if progress is not None:
                    progress(sent)
                if time.monotonic() > deadline:
                    raise errors.DriverError('%s: the upload was not done in time (%d of %d bytes)' % (where, sent, size))
        answer = connection.getresponse()
        body = answer.read(512).decode('utf-8', 'replace').strip()
        if answer.status not in (200, 201, 204):
            raise errors.DriverError('%s refused the upload: HTTP %d %s%s' % (where, answer.status, answer.reason, ' (%s)' % body if body else ''))
        return sent
    except (OSError, http.client.HTTPException) as exc:
        raise errors.Unreachable('%s did not take the upload: %s' % (where, exc)) from exc
    finally:
        connection.close()


def delete(content, datacenter_moid, datastore, path, deadline):
    """Delete the datastore file or directory `path` (FileManager.DeleteDatastoreFile_Task, which removes a
    directory with what it holds); nothing to do when it is not there. Returns True when it deleted."""
    task = content.fileManager.DeleteDatastoreFile_Task(
        name=datastore_path(datastore, path), datacenter=vim.Datacenter(datacenter_moid, stub(content)))
    try:
        wait_task(content.propertyCollector, task, deadline, 'DeleteDatastoreFile_Task of %s' % datastore_path(datastore, path))
    except errors.DriverError as exc:
        if 'FileNotFound' in str(exc):
            return False
        raise
    return True


__all__ = ['CHUNK', 'datastore_path', 'delete', 'folder_url', 'upload']
