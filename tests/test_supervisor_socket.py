"""supervisord's control socket has a path a Unix socket can take, however deep its
folder (launcher.supervision.control_socket): a too-long one kept `make up`'s own test
from starting under pytest-xdist."""

import socket

from launcher.supervision import control_socket


def test_a_deep_folder_gets_a_short_socket_path_that_reaches_the_same_folder(tmp_path):
    deep = tmp_path.joinpath(*["a-rather-long-folder-name"] * 6)
    deep.mkdir(parents=True)
    path = control_socket(deep)
    assert len(str(path)) <= 100 < len(str(deep / "supervisor.sock"))
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(path))  # what supervisord does with it
        assert (deep / "supervisor.sock").exists()
    assert control_socket(deep) == path  # the same link, again
    assert control_socket(tmp_path) == tmp_path.resolve() / "supervisor.sock"  # short enough as it is
