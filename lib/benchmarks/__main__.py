"""``python -m lib.benchmarks [NAMES] --device cpu|cuda --out FILE.csv``: run the registered benchmarks."""

import os
import sys

# Set before torch loads OpenMP: spinning idle threads steal the second core from anything else
# running, and single small calls (one decoded token) then spike by 100x. Notebooks and tests
# run the same way, so their benchmark cells and these CSV rows measure the same thing.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from lib.bench import main  # noqa: E402

sys.exit(main())
