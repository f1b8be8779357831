"""
Bases for test mixins: to the type checker a mixin is the test case it is
mixed into, at run time a plain C{object} (so trial does not collect it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.trial.unittest import SynchronousTestCase, TestCase

__all__ = ["SynchronousTestMixin", "TestMixin"]

if TYPE_CHECKING:
    SynchronousTestMixin = SynchronousTestCase
    TestMixin = TestCase
else:
    SynchronousTestMixin = TestMixin = object
