"""Moved to nac/lab/daemons.py (`nac lab` ships it); this name stays for the tests.

The module object itself is re-exported, so private helpers and monkeypatching keep working.
"""

import sys

from nac.lab import daemons as _moved

sys.modules[__name__] = _moved
