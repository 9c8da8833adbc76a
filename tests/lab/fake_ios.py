"""Run a fake-switches Cisco IOS switch on a loopback SSH port (python -m / script).

Usage: <fake-switches venv python> fake_ios.py PORT USER PASSWORD ENABLE_PASSWORD
Runs under the separate fake-switches virtualenv (it pins old Twisted APIs), so it imports
nothing from this project. Prints "READY" once listening.
"""

from __future__ import annotations

import sys


def main() -> None:
    port, user, password, enable = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
    # Not switch_factory: it imports every vendor, and the Juniper ones need lxml.
    from fake_switches.cisco.cisco_core import CiscoSwitchCore
    from fake_switches.switch_configuration import SwitchConfiguration
    from fake_switches.transports.ssh_service import SwitchSshService
    from twisted.internet import reactor

    # The enable password must be a str: fake-switches compares it with typed input.
    core = CiscoSwitchCore(SwitchConfiguration(
        "127.0.0.1", name="labios", privileged_passwords=[enable],
        ports=CiscoSwitchCore.get_default_ports()))
    service = SwitchSshService("127.0.0.1", port=int(port), switch_core=core,
                               users={user: password.encode()})
    service.hook_to_reactor(reactor)
    reactor.callWhenRunning(lambda: print("READY", flush=True))
    reactor.run()


if __name__ == "__main__":
    main()
