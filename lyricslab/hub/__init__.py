"""keras_hub presets: found offline, or tiny ones built from the demo corpus for tests and demos."""
