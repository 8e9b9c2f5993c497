"""asyncssh (Debian's python3-asyncssh) against the gateway: prints one JSON object with the results.

Usage: asyncssh_client.py PORT USER KEY WORKDIR ECHO_PORT CASE...   (cases as paramiko_client.py)
"""
import asyncio
import hashlib
import json
import os
import sys
import warnings

warnings.simplefilter("ignore")
import asyncssh  # noqa: E402

PORT, USER, KEY, WORK, ECHO_PORT = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
CASES = sys.argv[6:]
DEADLINE = 60


async def case_exec(c):
    r = await asyncio.wait_for(c.run("echo out; echo err >&2; exit 7"), DEADLINE)
    return {"stdout": r.stdout, "stderr": r.stderr, "status": r.exit_status}


async def case_pty(c):
    # Input is typed, not followed by EOF: the shell ends by its own `exit`.
    p = await c.create_process(term_type="vt100", term_size=(80, 24))
    p.stdin.write("echo pty-$((6*7))\nexit 5\n")
    r = await asyncio.wait_for(p.wait(), DEADLINE)
    return {"output": r.stdout, "status": r.exit_status}


async def case_pty_eof(c):
    # Input followed by EOF (like `printf ... | ssh -tt`): depends on the channel-pipeline work.
    r = await asyncio.wait_for(
        c.run(input="echo pty-$((6*7))\nexit 5\n", term_type="vt100", term_size=(80, 24)), DEADLINE / 2)
    return {"output": r.stdout, "status": r.exit_status}


def sha(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


async def case_sftp(c):
    src = os.path.join(WORK, "asyncssh-up.bin")
    with open(src, "wb") as f:
        f.write(os.urandom(3 * 1024 * 1024 + 17))
    back = os.path.join(WORK, "asyncssh-back.bin")
    async with c.start_sftp_client() as s:
        await asyncio.wait_for(s.put(src, "asyncssh-remote.bin"), DEADLINE)
        await asyncio.wait_for(s.get("asyncssh-remote.bin", back), DEADLINE)
    return {"sent": sha(src), "back": sha(back)}


async def case_forward(c):
    reader, writer = await asyncio.wait_for(c.open_connection("127.0.0.1", ECHO_PORT), DEADLINE)
    writer.write(b"through-the-forward\n")
    got = await asyncio.wait_for(reader.readline(), DEADLINE)
    writer.close()
    return {"echo": got.decode()}


async def main():
    result = {}
    try:
        conn = await asyncio.wait_for(
            asyncssh.connect("127.0.0.1", port=int(PORT), username=USER, client_keys=[KEY],
                             known_hosts=None, agent_path=None), DEADLINE)
    except Exception as e:  # noqa: BLE001 - reported to the test
        print(json.dumps({"connect": {"error": repr(e)}}))
        return
    async with conn:
        for name in CASES:
            try:
                result[name] = await globals()["case_" + name](conn)
            except Exception as e:  # noqa: BLE001
                result[name] = {"error": repr(e)}
    print(json.dumps(result))


asyncio.run(main())
