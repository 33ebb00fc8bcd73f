"""The control socket's file: owner only, or shared with the group ``mxbackup``."""

from __future__ import annotations

import grp
import os
import stat
import tempfile

from twisted.internet import protocol, reactor
from twisted.trial.unittest import TestCase

from mxbackup.ops.control import ControlEndpoint


class SocketModeTests(TestCase):
    def listen(self, group: str) -> os.stat_result:
        path = os.path.join(tempfile.mkdtemp(prefix="mxbackup-sock-"), "control.sock")
        umask = os.umask(0o022)
        os.umask(umask)
        d = ControlEndpoint(reactor, path, group=group).listen(protocol.Factory())
        port = self.successResultOf(d)
        self.addCleanup(port.stopListening)
        self.assertEqual(os.umask(umask), umask)  # put back as it was
        return os.stat(path)

    def test_private_without_the_group(self) -> None:
        st = self.listen("no-such-group-for-mxbackup")
        self.assertTrue(stat.S_ISSOCK(st.st_mode))
        self.assertEqual(stat.S_IMODE(st.st_mode), 0o600)

    def test_group_accessible_when_the_group_exists(self) -> None:
        mine = grp.getgrgid(os.getgid()).gr_name  # a group we may give files to
        st = self.listen(mine)
        self.assertEqual(stat.S_IMODE(st.st_mode), 0o660)
        self.assertEqual(st.st_gid, os.getgid())
