# Copyright: multihv.cloud developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Compile each module imported from Ansible's module zip once, not twice. Private to multihv.cloud: do not import.

Ansible sends a module and its module_utils as Python source in a zip, without bytecode (nothing is written where
the module runs), so every file a module imports is compiled on every run. zipimport compiles each one twice: its
find_spec asks get_filename, which works the file out by compiling the module, and exec_module's get_code compiles
it again. This collection's modules import 35 to 80 files of it, so the second compilation was a tenth to a fifth
of a second of every module process (tests/benchmarks/README.md). The importer here keeps the code get_filename
compiled for the get_code that follows. `_args`, the first file of this collection every module imports, installs
it; only in a module process (this file imported from a zip): the controller's imports (the inventory plugin's, from
the installed collection with its bytecode) are untouched.
"""

from __future__ import annotations

import sys
import zipimport

# (code, is_package, path) of a module in the zip: zipimport's own, in every Python 3 since 3.8.
_module_code = getattr(zipimport, '_get_module_code', None)


class CompileOnceImporter(zipimport.zipimporter):
    """A zipimporter whose get_filename and get_code share one compilation of a module."""

    def __init__(self, path):
        super().__init__(path)
        self._compiled = {}

    def _code(self, fullname, keep):
        entry = self._compiled.pop(fullname, None) or _module_code(self, fullname)
        if keep:
            self._compiled[fullname] = entry
        return entry

    def get_filename(self, fullname):
        return self._code(fullname, keep=True)[2]

    def get_code(self, fullname):
        return self._code(fullname, keep=False)[0]


def install():
    """In a module process (this file imported from Ansible's zip), import the rest of the zip compiled once."""
    if _module_code is not None and isinstance(getattr(__spec__, 'loader', None), zipimport.zipimporter):
        replace_zip_importers()


def replace_zip_importers():
    """Make every zip on the import path, and each zip package's path from here on, a CompileOnceImporter's."""
    sys.path_hooks[:] = [CompileOnceImporter if hook is zipimport.zipimporter else hook for hook in sys.path_hooks]
    for path, finder in list(sys.path_importer_cache.items()):
        if type(finder) is zipimport.zipimporter:  # pylint: disable=unidiomatic-typecheck  # not our subclass
            sys.path_importer_cache[path] = CompileOnceImporter(path)
