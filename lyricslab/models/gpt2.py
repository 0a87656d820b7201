"""GPT-2 from a keras_hub preset, fine-tuned with LoRA or in full (`model.family: gpt2`).

The backbone is keras_hub's GPT2Backbone, loaded from `model.preset`. `PresetCausalLM` wraps it
so it reads and writes lyricslab's token ids (see lyricslab.text.preset_tokenizers: lyricslab id =
GPT-2 id + 3, `<|endoftext|>` is <eos>), which lets it go through the same windows, scorers,
callbacks and sampling as every other model.

LoRA is keras_hub's `backbone.enable_lora(rank)` with its biases frozen (lyricslab.models.lora,
keras-hub#2701), so the preset + the small LoRA file is exactly the fine-tuned model. `model.save`
writes merged kernels (Keras' EinsumDense saves `kernel + A·B`), so the saved .keras is a plain GPT-2.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras
from keras import ops

from lyricslab.hub.presets import load_backbone, load_hub_tokenizer
from lyricslab.models.decoding import TransformerCache
from lyricslab.models.lora import enable_lora, lora_layer_paths
from lyricslab.text.preset_tokenizers import ID_OFFSET

NO_PROBABILITY = -1e9  # logit of ids the model must never predict: softmax gives them exactly 0 in float32
LORA_FILE = "lora.lora.h5"  # keras_hub insists on the .lora.h5 ending


@keras.saving.register_keras_serializable(package="lyricslab")
class PresetCausalLM(keras.Model):
    """lyricslab token ids (batch, time) -> next-token logits over lyricslab's ids, around a GPT-2 backbone.

    `context_length` is how many tokens scoring and generation show the model at once (at most
    the backbone's position table).
    """

    def __init__(self, backbone: keras.Model, end_token_id: int, context_length: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.backbone = backbone
        self.end_token_id = int(end_token_id)
        limit = int(backbone.max_sequence_length)
        self.context_length = min(int(context_length or limit), limit)

    def build(self, input_shape=None):
        self.built = True  # nothing of its own to create: the backbone arrives built, with the preset's weights

    def backbone_ids(self, tokens):
        """lyricslab ids -> GPT-2 ids (<pad>, <unk>, <eos> all read as `<|endoftext|>`)."""
        tokens = ops.cast(tokens, "int32")
        return ops.where(tokens < ID_OFFSET, self.end_token_id, tokens - ID_OFFSET)

    def lyricslab_logits(self, logits):
        """GPT-2's logits -> lyricslab's: <eos> takes `<|endoftext|>`'s logit; <pad>, <unk> and the
        end token's own shifted slot get none of the probability, so the softmax is GPT-2's exactly."""
        logits = ops.cast(logits, "float32")
        end = logits[..., self.end_token_id:self.end_token_id + 1]
        never = ops.full_like(end, NO_PROBABILITY)
        out = ops.concatenate([never, never, end, logits], axis=-1)
        slot = ops.arange(ops.shape(out)[-1]) == self.end_token_id + ID_OFFSET
        return out + ops.where(slot, NO_PROBABILITY, 0.0)

    def call(self, tokens, training=None):
        ids = self.backbone_ids(tokens)
        # Causal attention alone: windows are padded only at their end, where nothing is scored.
        hidden = self.backbone({"token_ids": ids, "padding_mask": ops.ones_like(ids)}, training=training)
        return self.lyricslab_logits(self.backbone.token_embedding(hidden, reverse=True))

    def save_adapters(self, folder: Path) -> Path | None:
        """The LoRA adapters alone (small), beside the merged model: the preset + this file is the
        fine-tuned model. None under full fine-tuning."""
        if not lora_layer_paths(self.backbone):
            return None
        path = Path(folder) / LORA_FILE
        self.backbone.save_lora_weights(str(path))
        return path

    def decoding_cache(self, stride: int | None = None) -> "GPT2Cache":
        """What lyricslab.models.decoding.make_cache uses for this model: keras_hub's KV cache."""
        return GPT2Cache(self, stride)

    def get_compile_config(self) -> None:
        """Saved uncompiled: the optimizer's state is the adapters', which the merged model no longer has."""
        return None

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "backbone": keras.saving.serialize_keras_object(self.backbone),
                "end_token_id": self.end_token_id, "context_length": self.context_length}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "PresetCausalLM":
        config = dict(config)
        config["backbone"] = keras.saving.deserialize_keras_object(config["backbone"])
        return cls(**config)


class GPT2Cache(TransformerCache):
    """Cached decoding through the GPT-2 backbone's own layers, with lyricslab's id mapping around it.

    The same steps as GPT2CausalLM.call_with_cache (token + position embedding, TransformerDecoder
    blocks with `self_attention_cache`, final norm, reversed embedding), and the same sliding
    window as the from-scratch transformer when a song outgrows the context.
    """

    def __init__(self, model: PresetCausalLM, stride: int | None = None):  # noqa: super().__init__ reads layer names this model lacks
        backbone = model.backbone
        self.adapter = model
        self.embedding, self.position = backbone.token_embedding, backbone.position_embedding
        self.blocks, self.norm = list(backbone.transformer_layers), backbone.layer_norm
        self.context = model.context_length
        self.stride = stride or max(1, self.context // 4)
        if not 1 <= self.stride < self.context:
            raise ValueError(f"the window stride must be between 1 and context - 1 = {self.context - 1}, "
                             f"not {self.stride}")
        self.keep = self.context - self.stride
        self.heads = int(backbone.num_heads)
        self.head_dim = int(backbone.hidden_dim) // self.heads

    def forward(self, tokens, cache, index):
        logits, hidden, cache = super().forward(self.adapter.backbone_ids(tokens), cache, index)
        return self.adapter.lyricslab_logits(logits), hidden, cache


def build_gpt2(cfg: Any, vocab_size: int) -> PresetCausalLM:
    """The preset's GPT-2 (dropout from the config), with LoRA on `model.lora_targets` unless
    `model.lora_rank` is null (full fine-tuning)."""
    m = cfg.model
    backbone = load_backbone(m.preset, "gpt2", dropout=float(cfg.dropout.rate),
                             dtype=keras.mixed_precision.global_policy().name)
    if vocab_size != backbone.vocabulary_size + ID_OFFSET:
        raise ValueError(f"the tokenizer has {vocab_size - ID_OFFSET} ids, the preset's GPT-2 "
                         f"{backbone.vocabulary_size}; use tokenizer=gpt2 with the same model.preset")
    end = int(load_hub_tokenizer(m.preset, "gpt2").end_token_id)
    model = PresetCausalLM(backbone, end, m.get("context"), name=str(m.name))
    model.build((None, None))
    if int(cfg.trainer.seq_len) > model.context_length:
        raise ValueError(f"trainer.seq_len={cfg.trainer.seq_len} is longer than the model's context "
                         f"({model.context_length}); lower trainer.seq_len")
    if m.get("lora_rank"):
        enable_lora(backbone, int(m.lora_rank), list(m.lora_targets))
    return model


