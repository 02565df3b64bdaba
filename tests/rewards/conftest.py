import pytest

from .chat_server import FakeServer


@pytest.fixture
def serve():
    servers = []

    def start(reply):
        servers.append(FakeServer(reply))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


