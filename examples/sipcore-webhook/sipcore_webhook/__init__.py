# -*- test-case-name: sipcore_webhook.test -*-
"""
sipcore-webhook: a sipcore handler plugin that POSTs connection close events
as JSON to an HTTP URL.

The plugin descriptor is in C{twisted/plugins/sipcore_webhook_plugin.py};
the implementation, imported only when the handler is enabled, is
L{sipcore_webhook.handler.Webhook}.
"""

__version__ = "1.0.0"
