"""The counting worker's entry point: ``python -m pytest_modelopt.counting FD THREADS DIRECTORY``.

``CountingWorker`` starts it under valgrind; it serves requests on the socket ``FD`` until the
parent sends None or goes away (``server``).
"""

import sys
from multiprocessing.connection import Connection
from pathlib import Path

from pytest_modelopt.counting.server import _serve

if __name__ == "__main__":
    _serve(Connection(int(sys.argv[1])), int(sys.argv[2]), Path(sys.argv[3]))
