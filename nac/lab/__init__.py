"""The end-to-end lab behind `nac lab`: a namespace switch, 802.1X hosts and `nac serve`.

See README.md in this directory.
"""

# The scenarios of `nac lab run`, in the order `all` runs them (kept here, import-light, for
# the CLI's argument check; nac/lab/scenarios.py defines them).
SCENARIO_NAMES = ("compliant", "vulnerable", "mab", "advisory", "ids", "restart", "inflight")
