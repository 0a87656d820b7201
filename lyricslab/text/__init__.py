"""Text -> tokens -> model inputs: tokenizers (own and presets'), and the window layouts for training and scoring."""
