"""Whole models the book builds from its own parts: encoders, decoders and their pretrained checkpoints."""
