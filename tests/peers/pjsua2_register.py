"""
sipcore test peer: pjsua2 (pjproject's API, the C{pjsua2-python} wheel)
registers one account of C{example.com} over UDP with a password
(through the server at C{127.0.0.1:SERVER_PORT} as its outbound proxy), prints one line
C{registered STATUS REASON}, and keeps the registration until it is
killed (or 60 seconds have passed, without unregistering then either).

    python pjsua2_register.py SERVER_PORT USER PASSWORD

No sound device is used (pjsua2's null device).  It gives up waiting
for the registration after 20 seconds (the line then says status 0) and
exits 1.
"""

from __future__ import annotations

import sys
import time

import pjsua2 as pj


class _Account(pj.Account):  # type: ignore[misc]
    """
    An account that records its registration's final status.
    """

    status = 0
    reason = ""

    def onRegState(self, prm: object) -> None:
        info = self.getInfo()
        if info.regStatus >= 200:
            self.status = info.regStatus
            self.reason = info.regStatusText


def main(port: int, user: str, password: str) -> int:
    endpoint = pj.Endpoint()
    endpoint.libCreate()
    config = pj.EpConfig()
    config.logConfig.level = 1
    config.logConfig.consoleLevel = 1
    config.uaConfig.threadCnt = 0
    config.uaConfig.mainThreadOnly = True
    endpoint.libInit(config)
    endpoint.audDevManager().setNullDev()
    transport = pj.TransportConfig()
    transport.boundAddress = "127.0.0.1"
    transport.port = 0
    endpoint.transportCreate(pj.PJSIP_TRANSPORT_UDP, transport)
    endpoint.libStart()
    account = pj.AccountConfig()
    account.idUri = "sip:{}@example.com".format(user)
    account.regConfig.registrarUri = "sip:example.com"
    account.sipConfig.proxies.append("sip:127.0.0.1:{};lr".format(port))
    account.sipConfig.authCreds.append(pj.AuthCredInfo("digest", "*", user, 0, password))
    registering = _Account()
    registering.create(account)
    deadline = time.monotonic() + 20
    while registering.status == 0 and time.monotonic() < deadline:
        endpoint.libHandleEvents(50)
    print("registered {} {}".format(registering.status, registering.reason), flush=True)
    if registering.status != 200:
        return 1
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        endpoint.libHandleEvents(200)
    return 0


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]), sys.argv[2], sys.argv[3]))
