"""Sampling: cached decoding with keras_hub samplers, and whole songs from a prompt."""
