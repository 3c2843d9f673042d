"""supervisor's event listener for the local stack: counts each program's unexpected exits (a
crash, a kill; each followed by supervisor's restart) in a JSON file that `make status` reads.

    python -m deploy.supervisor_events PATH     (run by supervisord: see deploy/supervision.py)
"""

import json
import os
import sys
from pathlib import Path

from supervisor import childutils


def main(path: Path) -> None:
    while True:
        headers, payload = childutils.listener.wait(sys.stdin, sys.stdout)
        fields = dict(token.split(":", 1) for token in payload.split() if ":" in token)
        if headers.get("eventname") == "PROCESS_STATE_EXITED" and fields.get("expected") == "0":
            try:
                counts = json.loads(path.read_text())
            except (FileNotFoundError, ValueError):
                counts = {}
            counts[fields["processname"]] = counts.get(fields["processname"], 0) + 1
            scratch = path.with_suffix(".tmp")
            scratch.write_text(json.dumps(counts))
            os.replace(scratch, path)
        childutils.listener.ok(sys.stdout)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
