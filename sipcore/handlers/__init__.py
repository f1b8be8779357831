# -*- test-case-name: tests.test_tap,tests.test_cleanup_integration -*-
"""
Built-in handler implementations.  Their plugin descriptors live in
C{twisted/plugins/sipcore_handlers.py} and import these modules only when
the handler's options are read or the handler is made.
"""
