"""LoRA on a keras_hub backbone: `enable_lora` plus the fix for keras-hub#2701.

keras_hub's `backbone.enable_lora(rank)` freezes the backbone and adds rank-r adapters to the
target EinsumDense layers, but leaves those layers' biases trainable, while `save_lora_weights`
stores only the adapters: reloading the preset plus the adapters would silently drop the bias
updates. The biases are frozen here, so the preset + the small LoRA file is the fine-tuned backbone.
"""

from __future__ import annotations

from typing import Any


def lora_layer_paths(backbone: Any) -> set[str]:
    """Paths of the layers that carry LoRA adapters."""
    return {v.path.rsplit("/", 1)[0] for v in backbone.variables if v.path.endswith("/lora_kernel_a")}


def freeze_lora_biases(backbone: Any) -> None:
    """The fix for keras-hub#2701: the adapted layers' biases stay as the preset has them."""
    adapted = lora_layer_paths(backbone)
    for v in backbone.variables:
        if v.path.endswith("/bias") and v.path.rsplit("/", 1)[0] in adapted:
            v.trainable = False


def enable_lora(backbone: Any, rank: int, targets: list[str]) -> None:
    backbone.enable_lora(int(rank), target_layer_names=list(targets))
    if not lora_layer_paths(backbone):
        raise ValueError(f"model.lora_targets={list(targets)} names no layer of this backbone; use some of "
                         f"query, key, value, attention_output")
    freeze_lora_biases(backbone)
