"""
sipcore tests.
"""
