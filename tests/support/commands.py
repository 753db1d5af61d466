"""How tests run the `waorch` command as a real child process."""

import sys

WAORCH = [sys.executable, "-m", "waorch"]
