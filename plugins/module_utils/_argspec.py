# Copyright: multihv.cloud developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""AnsibleModule for options with suboptions given a value of the wrong kind. Private to multihv.cloud: do not import.

ansible-core (2.19 included) looks into the value of an option with suboptions before it checks that
the value is a mapping: a number, a boolean or a list of numbers there ends the module with a bare
TypeError ("argument of type 'int' is not iterable") instead of a validation error
(https://github.com/ansible/ansible/pull/81631). module() removes the suboptions of exactly those
options before Ansible validates, so that its own type error ("... is of type <class 'int'> and we
were unable to convert to dict ...") is what the user reads; well-formed values keep every check.
"""

from __future__ import annotations

from collections.abc import Mapping


def _breaks_suboptions(value):
    """True for a value ansible-core's suboption handling fails on (strings it reports itself)."""
    return value is not None and not isinstance(value, (Mapping, str))


def _given(option, name, params):
    """The values given for an option with suboptions (under its name or an alias), list elements one by one."""
    if not isinstance(params, Mapping):
        return []
    values = []
    for key in (name,) + tuple(option.get('aliases') or ()):
        if key in params:
            value = params[key]
            many = option.get('type') == 'list' and isinstance(value, (list, tuple))
            values.extend(value if many else [value])
    return values


def guarded(spec, params):
    """spec with the suboptions removed from every option (at any depth) whose given value ansible-core
    cannot look into; the others are as they were. spec itself is left unchanged."""
    result = {}
    for name, option in spec.items():
        suboptions = option.get('options')
        if not suboptions:
            result[name] = option
            continue
        values = _given(option, name, params)
        if any(_breaks_suboptions(value) for value in values):
            result[name] = dict((k, v) for k, v in option.items() if k not in ('options', 'apply_defaults'))
            continue
        for value in values:
            suboptions = guarded(suboptions, value)
        result[name] = dict(option, options=suboptions)
    return result


def module(base, **kwargs):
    """base(**kwargs), base being AnsibleModule (the module file imports it from ansible.module_utils.basic),
    its argument spec guarded against the parameters given (guarded) before Ansible validates them."""
    class Guarded(base):
        def _load_params(self):
            super()._load_params()  # AnsibleModule validates self.params against self.argument_spec after this
            self.argument_spec = guarded(self.argument_spec, self.params)
    return Guarded(**kwargs)
