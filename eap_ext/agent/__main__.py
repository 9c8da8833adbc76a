"""`python -m eap_ext.agent` is `nac-agent` (the IMC shim runs it this way)."""

from eap_ext.agent.cli import main

main()
