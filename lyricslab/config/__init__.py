"""Settings before any stage: package paths (configs, sweep files), errors, the shared command line, quiet TensorFlow start-up."""
