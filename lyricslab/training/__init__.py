"""Training: train(cfg), the one fit skeleton, callbacks, optimizers, budgets, FLOPs, the config checks."""
