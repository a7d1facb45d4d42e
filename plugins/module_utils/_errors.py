# Copyright: multihv.cloud developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Errors of the collection's core. Private to multihv.cloud: do not import.

Every error says what was wrong, with which object, and what was left
untouched; modules turn them into fail_json(msg=str(error)).
"""

from __future__ import annotations

import platform
import sys


class MultihvError(Exception):
    """Base of every error the core raises on purpose."""


class ConfigError(MultihvError):
    """The cloud file is missing or malformed."""


class RegistryError(MultihvError):
    """The registry cannot be opened, read or written."""


class LeaseHeld(MultihvError):
    """A lease another run holds did not come free within the wait: that run works on the object now."""


class LeaseLost(MultihvError):
    """A lease this run held changed hands or ran out: the run must stop before its next irreversible step."""


class NotFound(MultihvError):
    """A named object (node, flavor, instance...) does not exist."""


class DriverError(MultihvError):
    """A hypervisor endpoint refused or failed a request."""


class Unreachable(DriverError):
    """A hypervisor endpoint did not answer (in time)."""


class NoAnswer(Unreachable):
    """A hypervisor endpoint gave no answer before a deadline (it neither refused nor failed): a busy one may
    answer a second asking, which a refusal would not."""


class SpawnUnconfirmed(Unreachable):
    """A spawn whose endpoint stopped answering and whose VM, which may exist or still be made there
    (a vCenter finishing a clone), could not be destroyed: the instance's record must stay for the
    reconciler to clean up after, never be removed as if nothing was made."""


class MigrationCancelled(DriverError):
    """A migration was aborted on purpose (its completion timeout ran out): the instance stayed where it was."""


class AuthenticationFailed(DriverError):
    """A hypervisor endpoint refused the credentials."""


class GuestDataInvalid(MultihvError):
    """What an instance's guest would receive (user_data, keys, NICs) cannot be delivered: nothing
    was made for it. The message names the instance and the field, never the field's content (user_data
    and passwords may carry secrets)."""


class MissingLibrary(MultihvError):
    """A Python library the collection needs cannot be imported by the Python that runs it.

    The modules run on the controller with the interpreter Ansible chose for that host: with `-i localhost,`
    and no ansible_python_interpreter that is the one Ansible discovers (/usr/bin/python3, say), not the
    virtualenv that has the requirements. So the message names that Python and its host, as Ansible's
    missing_required_lib does, and says how to pick another; it never blames the library alone."""

    def __init__(self, library, reason=None):
        self.library = library
        self.python = sys.executable
        super().__init__(
            '%s is required%s, and the Python that runs this (%s on %s) cannot import it. Install the '
            "collection's requirements in that Python (pip install -r requirements.txt, the file at the top of the "
            'installed collection), or run the modules with a Python that has them: for tasks on the controller, '
            'connection local and ansible_python_interpreter set to "{{ ansible_playbook_python }}" '
            '(the Python ansible-playbook runs with), as the collection\'s playbooks do'
            % (library, ' ' + reason if reason else '', sys.executable or 'an unknown Python', platform.node() or 'this host'))


class ImageInUse(DriverError):
    """An image's base is the backing file of instance disks on a host (issue 17, snapshots to images):
    removing it would corrupt them. uuids: those instances' uuids, so that the core can name them."""

    def __init__(self, message, uuids=()):
        self.uuids = tuple(uuids)
        super().__init__(message)


class RuleConflict(DriverError):
    """Per-VM HA and DRS rules (issue 18 §4): a rule the cloud would make on a node contradicts a rule the node has
    (an affinity that an anti-affinity keeps apart, directly or through other affinity rules): nothing was sent."""
