# Copyright: multihv.cloud developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a registry holds, read with the database's own driver (sqlite3 or psycopg), not the collection's code:

  read_registry.py URL    JSON: {"schema_version": N, "flavors": [...], "images": [...]}

URL is a registry URL as the cloud file gives it (sqlite:////path or postgresql://...). JSON columns are decoded.
"""

from __future__ import annotations

import json
import sqlite3
import sys

QUERIES = {
    'schema_version': 'SELECT max(version) FROM schema_version',
    'flavors': 'SELECT name, vcpus, ram_mb, disk_gb, extra_specs FROM flavors ORDER BY name',
    'images': 'SELECT name, hypervisor_type, properties, locations FROM images ORDER BY name',
}
JSON_COLUMNS = ('extra_specs', 'properties', 'locations')


def connect(url):
    if url.startswith('sqlite:///'):
        # mode=ro: a reader must not create the file.
        return sqlite3.connect('file:%s?mode=ro' % url[len('sqlite:///'):], uri=True)
    import psycopg  # pylint: disable=import-outside-toplevel
    return psycopg.connect(url)


def rows(conn, sql):
    cursor = conn.cursor()
    cursor.execute(sql)
    names = [column[0] for column in cursor.description]
    found = []
    for row in cursor.fetchall():
        record = dict(zip(names, row))
        for column in JSON_COLUMNS:
            if record.get(column) is not None:
                record[column] = json.loads(record[column])
        found.append(record)
    return found


def main():
    conn = connect(sys.argv[1])
    try:
        cursor = conn.cursor()
        cursor.execute(QUERIES['schema_version'])
        result = {'schema_version': cursor.fetchone()[0],
                  'flavors': rows(conn, QUERIES['flavors']),
                  'images': rows(conn, QUERIES['images'])}
    finally:
        conn.close()
    json.dump(result, sys.stdout, sort_keys=True)


if __name__ == '__main__':
    main()
