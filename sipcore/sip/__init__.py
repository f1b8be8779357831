# -*- test-case-name: tests.test_core -*-
"""
The SIP layer: transactions, the registrar, the proxy and the core that
dispatches messages to them.
"""
