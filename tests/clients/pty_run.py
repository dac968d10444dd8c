"""Runs a command in a pseudo-terminal and drives it as a person at a terminal would.

Only the standard library: the test starts this with the command line as its arguments, then
sends one JSON request per line on stdin and reads one JSON answer per line on stdout:

  {"expect": REGEX, "timeout": S}  wait until the output after the last match matches REGEX;
                                    answers {"ok", "match", "groups", "output"} (output: all of
                                    it, for messages), ok false at the deadline or at the end
  {"send": TEXT}                    type TEXT ("\\u0003" is Ctrl-C, "\\u0004" Ctrl-D)
  {"wait": S}                       wait for the command's exit; {"ok", "code", "signal", "output"}

Output is decoded as UTF-8 (invalid bytes replaced) and "\\r\\n" read as "\\n". When the test
goes away (stdin closes) the command is killed.
"""

import fcntl
import json
import os
import pty
import re
import select
import signal
import struct
import sys
import termios
import time

ROWS, COLUMNS = 24, 100


def main():
    argv = sys.argv[1:]
    pid, fd = pty.fork()
    if pid == 0:
        # The child: the pty is its controlling terminal, Ctrl-C on it sends SIGINT here.
        fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLUMNS, 0, 0))
        try:
            os.execvp(argv[0], argv)
        finally:
            os._exit(127)

    raw = bytearray()
    state = {"cursor": 0, "eof": False, "status": None}

    def text():
        return raw.decode("utf-8", "replace").replace("\r\n", "\n")

    def pump(deadline):
        """Reads what the command wrote, waiting until `deadline` for something to arrive."""
        if state["eof"]:
            return False
        wait = max(0.0, deadline - time.monotonic())
        ready, _, _ = select.select([fd], [], [], wait)
        if not ready:
            return False
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: the command exited and the terminal hung up
            chunk = b""
        if not chunk:
            state["eof"] = True
            return False
        raw.extend(chunk)
        return True

    def reap(block):
        if state["status"] is None:
            done, status = os.waitpid(pid, 0 if block else os.WNOHANG)
            if done:
                state["status"] = status
        return state["status"]

    def answer(value):
        sys.stdout.write(json.dumps(value) + "\n")
        sys.stdout.flush()

    for line in sys.stdin:
        request = json.loads(line)
        if "expect" in request:
            pattern = re.compile(request["expect"])
            deadline = time.monotonic() + request.get("timeout", 30)
            while True:
                out = text()
                found = pattern.search(out, state["cursor"])
                if found:
                    state["cursor"] = found.end()
                    answer({"ok": True, "match": found.group(0), "groups": list(found.groups()),
                            "output": out})
                    break
                if state["eof"] or time.monotonic() >= deadline:
                    answer({"ok": False, "eof": state["eof"], "output": out})
                    break
                pump(deadline)
        elif "send" in request:
            # Keep the command from blocking on a full terminal while we type.
            while pump(time.monotonic()):
                pass
            os.write(fd, request["send"].encode("utf-8"))
            answer({"ok": True})
        elif "wait" in request:
            deadline = time.monotonic() + request["wait"]
            while not state["eof"] and time.monotonic() < deadline:
                pump(deadline)
            while reap(False) is None and time.monotonic() < deadline:
                time.sleep(0.02)  # polling the exit between reads; no output is awaited here
            status = reap(False)
            if status is None:
                answer({"ok": False, "output": text()})
            else:
                answer({"ok": True,
                        "code": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
                        "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
                        "output": text()})
        else:
            answer({"ok": False, "error": "unknown request: " + line})

    if reap(False) is None:
        os.kill(pid, signal.SIGKILL)
        reap(True)


if __name__ == "__main__":
    main()
