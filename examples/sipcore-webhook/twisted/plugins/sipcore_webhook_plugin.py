# -*- test-case-name: sipcore_webhook.test.test_webhook -*-
"""
The C{webhook} handler plugin.  Light on purpose: Twisted imports every
module in twisted/plugins/ to find plugins, so this one only names the
implementation, which sipcore imports for its options and when the handler
is enabled.
"""

from sipcore.plugin import HandlerPlugin

webhook = HandlerPlugin(
    "webhook",
    "POST connection close events as JSON to an HTTP URL (option url=), or log them",
    ("tcp:closed", "tcp:reset", "tcp:timeout", "websocket:closed"),
    implementation="sipcore_webhook.handler.Webhook",
    priority=200,
    timeout=30.0,
    concurrency=10,
    backlog=1000,
)
