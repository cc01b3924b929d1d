"""Schemathesis hooks for the runs against a live server (`SCHEMATHESIS_HOOKS=tests.fuzz_hooks`).

The run's own admin and its key must survive it: a generated or linked path id that names one
of them (the ids in GAIA_FUZZ_PROTECTED, comma separated) is swapped for a random one before
the call, so no step can revoke, rotate, deactivate or demote the caller.
"""

from __future__ import annotations

import os
import uuid

import schemathesis

PROTECTED = frozenset(filter(None, os.environ.get("GAIA_FUZZ_PROTECTED", "").split(",")))


@schemathesis.hook
def before_call(context, case, kwargs):
    for name, value in list((case.path_parameters or {}).items()):
        if str(value) in PROTECTED or str(value).replace("-", "") in PROTECTED:
            case.path_parameters[name] = str(uuid.uuid4())
