"""Triton kernels, one module per kernel family, each with a launcher that takes torch tensors.

Importing this package configures Triton first: on a machine without a GPU it switches on the
CPU interpreter (``TRITON_INTERPRET=1``), which must happen before ``triton`` is imported.
"""

from lib.device import configure_triton

configure_triton()
