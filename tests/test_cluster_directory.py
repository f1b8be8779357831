"""
Tests for L{sipcore.cluster}: the node directory the proxy asks.
"""

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from sipcore.cluster import INodeDirectory, Node, StaticNodeDirectory


class StaticNodeDirectoryTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.directory = StaticNodeDirectory(1, b"key", {
            1: Node(1, "sip:127.0.0.1:5060;transport=tcp"),
            3: Node(3, "sip:127.0.0.3:5060;transport=tcp"),
            2: Node(2, "sip:127.0.0.2:5060;transport=tcp"),
        })

    def test_interface(self) -> None:
        self.assertTrue(verifyObject(INodeDirectory, self.directory))

    def test_otherNode(self) -> None:
        node = self.directory.node(2)
        assert node is not None
        self.assertEqual(node.uri, "sip:127.0.0.2:5060;transport=tcp")

    def test_selfIsNotAPeer(self) -> None:
        self.assertIsNone(self.directory.node(1))
        self.assertNotIn(1, [node.serverId for node in self.directory.nodes()])

    def test_unknown(self) -> None:
        self.assertIsNone(self.directory.node(9))

    def test_nodesOrdered(self) -> None:
        self.assertEqual([node.serverId for node in self.directory.nodes()], [2, 3])
