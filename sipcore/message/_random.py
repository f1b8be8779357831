# -*- test-case-name: tests.test_message_messages -*-
"""
Random hex strings for tags, branches and record ids, from the operating
system's cryptographic source (C{os.urandom}), read a block at a time
rather than one system call per value.
"""

from __future__ import annotations

import os

#: Bytes read from C{os.urandom} at once.
BLOCK = 4096


class RandomPool:
    """
    Hands out fresh bytes of one C{os.urandom} block until it is used up,
    then reads another.  Every byte is handed out once.  A forked child
    starts with an empty block, so parent and child never share values.
    """

    def __init__(self, block: int = BLOCK) -> None:
        self._block = block
        self._data = b""
        self._pos = 0

    def reset(self) -> None:
        """
        Drop what is left of the current block.
        """
        self._data = b""
        self._pos = 0

    def hex(self, count: int) -> str:
        """
        C{count} random bytes as C{2 * count} lower-case hex digits.
        """
        pos = self._pos
        end = pos + count
        if end > len(self._data):
            self._data = os.urandom(max(self._block, count))
            pos, end = 0, count
        self._pos = end
        return self._data[pos:end].hex()


POOL = RandomPool()
os.register_at_fork(after_in_child=POOL.reset)

#: C{randomHex(n)}: C{n} random bytes as hex digits.
randomHex = POOL.hex
