"""`python -m worker_container`: run the worker of the session described by the environment."""

import sys

from worker_container.worker import main

sys.exit(main())
