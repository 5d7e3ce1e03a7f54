"""Chapter 10 — quantization: number formats, scales, packing (see :mod:`lib.quant.formats`)."""
