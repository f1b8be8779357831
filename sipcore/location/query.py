# -*- test-case-name: tests.test_location_listing -*-
"""
Which bindings a listing asks for: L{BindingQuery}, the argument of
L{sipcore.interfaces.IBindingListing.listBindings}.
"""

from __future__ import annotations

from dataclasses import dataclass

from sipcore.location.binding import Binding

__all__ = ["BindingQuery", "MAX_PAGE"]

#: The largest page a listing returns.
MAX_PAGE = 1000


@dataclass(frozen=True)
class BindingQuery:
    """
    A page of unexpired bindings, filtered.

    @ivar domain: only bindings of this domain, or C{None}: any.
    @ivar username: only bindings of this user part, or C{None}: any.
    @ivar conid: only bindings bound to this connection id, or C{None}: any.
    @ivar offset: bindings skipped (in address-of-record, then C{ruid}
        order).
    @ivar limit: most bindings returned, 1 to L{MAX_PAGE}.
    """

    domain: str | None = None
    username: str | None = None
    conid: int | None = None
    offset: int = 0
    limit: int = 100

    def __post_init__(self) -> None:
        if not 1 <= self.limit <= MAX_PAGE:
            raise ValueError("limit must be between 1 and {}".format(MAX_PAGE))
        if self.offset < 0:
            raise ValueError("offset must not be negative")
        for text in (self.domain, self.username):
            if text is not None and "\x00" in text:
                raise ValueError("filters must not contain NUL")

    def matches(self, binding: Binding) -> bool:
        """
        @return: whether C{binding} passes the filters (not the expiry).
        """
        return ((self.domain is None or binding.domain == self.domain)
                and (self.username is None or binding.username == self.username)
                and (self.conid is None or binding.connectionId == self.conid))


def sortKey(binding: Binding) -> tuple[str, str, str]:
    """
    The order of a listing: user part, domain, C{ruid}.
    """
    return (binding.username, binding.domain, binding.ruid)
