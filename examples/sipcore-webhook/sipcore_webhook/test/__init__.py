"""
Tests for sipcore_webhook.
"""
