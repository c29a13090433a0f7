"""``python -m gpu_als``: the command line, as the ``gpu-als`` script runs it."""

import sys

from .cli import main

if __name__ == "__main__":  # not when imported (the docstring test imports every module)
    sys.exit(main())
