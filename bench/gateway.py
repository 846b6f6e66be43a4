"""Starting the release binary for the Python bench scripts."""

import os
import socket
import subprocess
import time

POLICY = "rules:\n  - { id: all, effect: allow }\n"


def start(binary: str, scratch: str, config: str, port: int) -> subprocess.Popen:
    """Writes `config` and an allow-all policy into `scratch`, starts the gateway on
    them, and returns once `port` accepts connections (or after 5 s)."""
    with open(os.path.join(scratch, "gw.yaml"), "w") as file:
        file.write(config)
    with open(os.path.join(scratch, "policy.yaml"), "w") as file:
        file.write(POLICY)
    gateway = subprocess.Popen(
        [binary, "run", "-c", os.path.join(scratch, "gw.yaml"), "--log-level", "error"],
        stdout=subprocess.DEVNULL,
    )
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.05)
    return gateway
