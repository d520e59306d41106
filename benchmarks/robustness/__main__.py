import sys

from benchmarks.robustness.run import main

if __name__ == "__main__":
    sys.exit(main())
