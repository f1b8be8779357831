# -*- test-case-name: tests.test_cleanup -*-
"""
Built-in handler implementations.  Their plugin descriptors live in
C{twisted/plugins/sipcore_handlers.py} and import these modules only when
the handler is enabled.
"""
