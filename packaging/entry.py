"""PyInstaller entry script for the ``multinic`` executable (see packaging/multinic.spec).

A frozen script runs as ``__main__`` outside any package, so it cannot use ``cni/__main__.py``
(relative import); it calls the same ``cni.main:main`` the console script does.
"""

import sys

from cni.main import main

if __name__ == "__main__":
    sys.exit(main())
