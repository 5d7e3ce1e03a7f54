"""``python -m lib.benchmarks [NAMES] --device cpu|cuda --out FILE.csv``: run the registered benchmarks."""

import sys

from lib.bench import main

sys.exit(main())
