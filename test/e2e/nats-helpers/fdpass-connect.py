"""ProxyCommand for OpenSSH with ProxyUseFdpass=yes (run with /usr/bin/python3).

Connects to HOST PORT, optionally writes a PROXY protocol v1 header naming SRC_IP:SRC_PORT as the
client, prints the socket's local port on stderr ("fdpass-connect: local port N") and hands the
connected socket to ssh over its stdout. ssh itself then owns the TCP connection, so the gateway's
peer is the real client and the test knows its source port.

Usage: fdpass-connect.py HOST PORT [SRC_IP SRC_PORT]
"""

import socket
import sys


def main() -> None:
    host, port = sys.argv[1], int(sys.argv[2])
    conn = socket.create_connection((host, port), timeout=10)
    conn.settimeout(None)
    if len(sys.argv) >= 5:
        src_ip, src_port = sys.argv[3], int(sys.argv[4])
        family = "TCP6" if ":" in src_ip else "TCP4"
        conn.sendall(f"PROXY {family} {src_ip} {host} {src_port} {port}\r\n".encode())
    sys.stderr.write(f"fdpass-connect: local port {conn.getsockname()[1]}\n")
    sys.stderr.flush()
    # ssh passes a unix socketpair as our stdout; the descriptor travels as SCM_RIGHTS.
    out = socket.socket(fileno=sys.stdout.fileno())
    socket.send_fds(out, [b"\0"], [conn.fileno()])


main()
