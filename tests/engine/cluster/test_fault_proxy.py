"""The fault proxy passes a replica's close on to the client, as TCP would carry the FIN."""

from __future__ import annotations

import socket
import threading

from engine.cluster.fault_proxy import FaultProxy, NetworkFaults


def test_a_replica_that_closes_closes_the_clients_connection_too() -> None:
    upstream = socket.create_server(("127.0.0.1", 0))
    port = upstream.getsockname()[1]

    def answer_once_then_close() -> None:
        conn, _ = upstream.accept()
        conn.recv(1024)
        conn.sendall(b"pong")
        conn.close()  # a replica closing its side (an idle keep-alive, or the process dying)

    threading.Thread(target=answer_once_then_close, daemon=True).start()
    clean = NetworkFaults(reset_p=0.0, silence_p=0.0, latency_s=(0.0, 0.0))
    with FaultProxy(port, clean) as url, socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1]))) as c:
        c.settimeout(10)
        c.sendall(b"ping")
        assert c.recv(1024) == b"pong"
        assert c.recv(1024) == b""  # the close arrived: before, the client waited for an answer until its timeout
    upstream.close()
