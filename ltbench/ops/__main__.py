"""``python -m ltbench.ops {carry,restore,snapshot,smoke,pack,import,tree-size}``."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
