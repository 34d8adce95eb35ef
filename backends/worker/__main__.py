"""`python -m backends.worker FD PARENT_PID HEARTBEAT_SECONDS` (started by the gateway)."""

import sys

from backends.worker.child import main

sys.exit(main(sys.argv[1:]))
