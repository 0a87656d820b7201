"""Sampling: whole songs from a prompt, through each model's cached decoding (lyricslab.models.decoding) and keras_hub samplers."""
