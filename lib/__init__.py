"""paper2kernel's library: the code every section of the book shows, tests and benchmarks.

The most used helpers are importable from the top level::

    import lib
    lib.seed_everything(0)
    lib.agree("softmax fp32", ours, reference, atol=1e-5, rtol=1e-4, reason="exact rewrite in fp32")
    lib.show(lib.softmax.softmax)

Topic modules (``lib.softmax``, ``lib.online_softmax``, ...) are one per section or chapter and are
listed for every section in ``book.yml``.
"""

from lib.agreement import agree, agree_flash_rule
from lib.device import default_device
from lib.seeding import seed_everything
from lib.show import show

__all__ = ["agree", "agree_flash_rule", "default_device", "seed_everything", "show"]
__version__ = "0.1.0"
