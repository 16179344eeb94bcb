"""Examples run as their users run them: ``python examples/X.py`` in a
subprocess on a free port, read line by line, stopped by a signal. The
``examples`` fixture (tests/conftest.py) starts them and kills what is left.
"""

import asyncio
import os
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
T = 60  # seconds; starting Python on a loaded machine can be slow
LISTENING = r"listening on \S+:(\d+)/"


class Example:
    """One example process; ``log`` holds every line read from it."""

    def __init__(self, proc):
        self.proc = proc
        self.log = []
        self.port = 0

    @classmethod
    async def start(cls, script, *args, env=None, listen_on="stderr"):
        """Starts ``examples/<script>`` with ``args`` and waits for its
        "listening on ...:PORT/" line on ``listen_on`` (stderr or stdout)."""
        environ = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
        # Appended: a PYTHONPATH already set (make sanitize) names the build.
        paths = [environ.get("PYTHONPATH", ""), str(REPO / "python")]
        environ["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(EXAMPLES / script),
            *args,
            env=environ,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        example = cls(proc)
        match = await example.wait_for_line(LISTENING, listen_on)
        example.port = int(match.group(1))
        return example

    async def wait_for_line(self, pattern, stream="stderr"):
        """Reads ``stream`` until a line matches; fails if the process ends."""
        pipe = self.proc.stdout if stream == "stdout" else self.proc.stderr
        while True:
            line = await asyncio.wait_for(pipe.readline(), T)
            if not line:
                raise AssertionError("example ended; its log:\n" + "".join(self.log))
            self.log.append(line.decode(errors="replace"))
            match = re.search(pattern, self.log[-1])
            if match:
                return match

    async def stop(self, sig):
        """Sends ``sig``, reads what is left of both streams, returns the
        exit status."""
        self.proc.send_signal(sig)
        out, err = await asyncio.wait_for(self.proc.communicate(), T)
        self.log.append(out.decode(errors="replace") + err.decode(errors="replace"))
        return self.proc.returncode

    def kill(self):
        if self.proc.returncode is None:
            self.proc.kill()
