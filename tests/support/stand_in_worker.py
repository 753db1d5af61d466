"""A stand-in session worker for runner tests: records its environment and lifecycle in its data dir.

Run as `python stand_in_worker.py` by the supervisor (or in a container). It writes env.json and
appends its pid to starts.txt in <SESSIONS_DIR>/<SESSION_ID>, exits 3 at once while a file named
`crash` exists there, and on SIGTERM appends `stopped <pid>` and exits 0.
"""

import json
import os
import signal
import sys
import time
from pathlib import Path

data = Path(os.environ["SESSIONS_DIR"]) / os.environ["SESSION_ID"]
data.mkdir(parents=True, exist_ok=True)


def _stop(signum, frame):
    with open(data / "starts.txt", "a") as f:
        f.write(f"stopped {os.getpid()}\n")
    sys.exit(0)


# the handler first: once its start line is written a worker always answers SIGTERM as documented
signal.signal(signal.SIGTERM, signal.SIG_IGN if (data / "ignore-sigterm").exists() else _stop)
(data / "env.json").write_text(json.dumps(dict(os.environ)))
with open(data / "starts.txt", "a") as f:
    f.write(f"{os.getpid()}\n")
if (data / "crash").exists():
    sys.exit(3)
while True:
    time.sleep(0.2)
