"""paramiko (Debian's python3-paramiko) against the gateway: prints one JSON object with the results.

Usage: paramiko_client.py PORT USER KEY WORKDIR ECHO_PORT CASE...
Cases: exec, pty, sftp, forward. Each case adds its own key to the result; an exception becomes
{"error": "..."} for that case, so the test names what failed.
"""
import hashlib
import json
import os
import socket
import sys
import time

import paramiko

PORT, USER, KEY, WORK, ECHO_PORT = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
CASES = sys.argv[6:]
DEADLINE = 60


def connect():
    c = paramiko.SSHClient()
    c.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    c.connect("127.0.0.1", port=int(PORT), username=USER, key_filename=KEY,
              allow_agent=False, look_for_keys=False, timeout=DEADLINE, banner_timeout=DEADLINE,
              auth_timeout=DEADLINE)
    return c


def case_exec(c):
    _, out, err = c.exec_command("echo out; echo err >&2; exit 7", timeout=DEADLINE)
    return {"stdout": out.read().decode(), "stderr": err.read().decode(),
            "status": out.channel.recv_exit_status(),
            "cipher": c.get_transport().remote_cipher}


def case_pty(c):
    ch = c.invoke_shell(term="vt100", width=80, height=24)
    ch.settimeout(DEADLINE)
    ch.sendall(b"echo pty-$((6*7))\nexit 5\n")
    buf = b""
    end = time.time() + DEADLINE
    while not ch.exit_status_ready() and time.time() < end:
        if ch.recv_ready():
            buf += ch.recv(65536)
        else:
            time.sleep(0.05)
    while ch.recv_ready():
        buf += ch.recv(65536)
    return {"output": buf.decode(errors="replace"), "status": ch.recv_exit_status() if ch.exit_status_ready() else None}


def sha(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def case_sftp(c):
    src = os.path.join(WORK, "paramiko-up.bin")
    with open(src, "wb") as f:
        f.write(os.urandom(3 * 1024 * 1024 + 17))
    s = c.open_sftp()
    s.put(src, "paramiko-remote.bin")
    back = os.path.join(WORK, "paramiko-back.bin")
    s.get("paramiko-remote.bin", back)
    s.close()
    return {"sent": sha(src), "back": sha(back)}


def case_forward(c):
    ch = c.get_transport().open_channel("direct-tcpip", ("127.0.0.1", ECHO_PORT), ("127.0.0.1", 0),
                                        timeout=DEADLINE)
    ch.settimeout(DEADLINE)
    ch.sendall(b"through-the-forward\n")
    got = b""
    while not got.endswith(b"\n"):
        d = ch.recv(4096)
        if not d:
            break
        got += d
    ch.close()
    return {"echo": got.decode()}


result = {}
try:
    client = connect()
except Exception as e:  # noqa: BLE001 - reported to the test
    print(json.dumps({"connect": {"error": repr(e)}}))
    sys.exit(0)
for name in CASES:
    try:
        result[name] = globals()["case_" + name](client)
    except Exception as e:  # noqa: BLE001
        result[name] = {"error": repr(e)}
client.close()
print(json.dumps(result))
