"""T5 v1.0 and v1.1 / flan-T5: pre-norm with RMSNorm, no biases, no attention scaling, relative
position buckets computed by each stack's first layer and shared by its other layers.

v1.0: ReLU FFN, LM head tied to the embeddings and fed `d_model**-0.5`-scaled hidden states.
v1.1 / flan: gated-GELU (tanh) FFN (`wi_0` activated, times `wi_1`) and, in checkpoints that store
`lm_head.weight`, an untied head without the scale.

MADLAD-400 style: a T5 whose vocabulary holds `<2xx>` tokens is a multilingual translator; the
target language's token starts the source (`source_prefix`), as MADLAD's users write `<2de> text`.
"""

from __future__ import annotations

import re

from tokenizers import Tokenizer
from torch import Tensor

from export.hf.base import Checkpoint, ConversionError, Converter, Weights, activation, register
from export.hf.tokenizer import fast_tokenizer
from service.manifest import LanguageTags, ModelSpec, StackSpec

MADLAD_LANGUAGE = re.compile(r"^<2([A-Za-z]{2,3}(?:[_-][A-Za-z0-9]{2,8})*)>$")  # <2de>, <2zh_Latn>, ...


@register
class T5Converter(Converter):
    model_types = ("t5",)
    architecture = "t5"

    def spec(self, ckpt: Checkpoint, weights: Weights) -> ModelSpec:
        config = ckpt.config
        projection = config.get("feed_forward_proj", "relu")
        gated = projection.startswith("gated-")
        act = projection.removeprefix("gated-")
        act = "gelu_new" if projection == "gated-gelu" else act  # as T5Config does
        decoder_layers = config.get("num_decoder_layers") or config["num_layers"]
        scaled = config.get("scale_decoder_outputs", config.get("tie_word_embeddings", True))
        untied = weights.has("lm_head.weight")  # flan-T5 / v1.1 store their own head
        bias = {
            "num_buckets": config.get("relative_attention_num_buckets", 32),
            "max_distance": config.get("relative_attention_max_distance", 128),
        }
        return ModelSpec(
            vocab_size=config["vocab_size"],
            d_model=config["d_model"],
            n_heads=config["num_heads"],
            d_head=config["d_kv"],
            d_ff=config["d_ff"],
            encoder=StackSpec(layers=config["num_layers"], attention={"relative_bias": bias}),
            decoder=StackSpec(layers=decoder_layers, attention={"kind": "causal", "relative_bias": bias}),
            activation=activation(act),
            gated_ffn=gated,
            norm="rmsnorm",
            norm_eps=config.get("layer_norm_epsilon", 1e-6),
            pre_norm=True,
            final_norm=True,
            positions="relative",
            attention_scale=1.0,
            qkv_bias=False,
            ffn_bias=False,
            tie_lm_head=not untied,
            lm_head_scale=config["d_model"] ** -0.5 if scaled else 1.0,
        )

    def state_dict(self, ckpt: Checkpoint, spec: ModelSpec, w: Weights) -> dict[str, Tensor]:
        out = {"shared.weight": w.get("shared.weight", "encoder.embed_tokens.weight", "decoder.embed_tokens.weight")}
        for stack, layers in (("encoder", spec.encoder.layers), ("decoder", spec.decoder.layers)):
            out[f"{stack}.relative_bias.embedding.weight"] = w.get(
                f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight"
            )
            out[f"{stack}.final_norm.weight"] = w.get(f"{stack}.final_layer_norm.weight")
            sublayers = [("SelfAttention", "self_attn")]
            if stack == "decoder":
                sublayers.append(("EncDecAttention", "cross_attn"))
            for i in range(layers):
                hf, heed = f"{stack}.block.{i}.layer", f"{stack}_layers.{i}"
                for j, (hf_attn, heed_attn) in enumerate(sublayers):
                    for proj in ("q", "k", "v", "o"):
                        out[f"{heed}.{heed_attn}.inner.{proj}_proj.weight"] = w.get(f"{hf}.{j}.{hf_attn}.{proj}.weight")
                    out[f"{heed}.{heed_attn}.norm.weight"] = w.get(f"{hf}.{j}.layer_norm.weight")
                ff = f"{hf}.{len(sublayers)}"
                if spec.gated_ffn:
                    out[f"{heed}.ffn.inner.fc_in.weight"] = w.get(f"{ff}.DenseReluDense.wi_0.weight")
                    out[f"{heed}.ffn.inner.fc_gate.weight"] = w.get(f"{ff}.DenseReluDense.wi_1.weight")
                else:
                    out[f"{heed}.ffn.inner.fc_in.weight"] = w.get(f"{ff}.DenseReluDense.wi.weight")
                out[f"{heed}.ffn.inner.fc_out.weight"] = w.get(f"{ff}.DenseReluDense.wo.weight")
                out[f"{heed}.ffn.norm.weight"] = w.get(f"{ff}.layer_norm.weight")
        if not spec.tie_lm_head:
            out["lm_head.weight"] = w.get("lm_head.weight")
        for i in range(1, max(spec.encoder.layers, spec.decoder.layers)):
            for stack in ("encoder", "decoder"):
                if w.has(f"{stack}.block.{i}.layer.0.SelfAttention.relative_attention_bias.weight"):
                    raise ConversionError(
                        f"{stack} layer {i} has its own relative attention bias; heed shares layer 0's"
                    )
        return out

    def tokenizer(self, ckpt: Checkpoint) -> Tokenizer:
        return fast_tokenizer(ckpt.directory)

    def languages(self, ckpt: Checkpoint, tokenizer: Tokenizer) -> LanguageTags | None:
        vocab = tokenizer.get_vocab(with_added_tokens=True)
        tokens = {m.group(1): i for t, i in vocab.items() if (m := MADLAD_LANGUAGE.match(t))}
        if not tokens:
            return None
        return LanguageTags(placement="source_prefix", tokens=dict(sorted(tokens.items())), lead_ids=_lead(tokenizer))

    def default_decoder_start(self, ckpt: Checkpoint, pad: int, eos: int) -> int:
        return pad  # T5 starts decoding with its pad token


def _lead(tokenizer: Tokenizer) -> list[int]:
    """The ids the tokenizer writes before a `<2xx>` tag that starts the text, as MADLAD's users
    write it (`<2de> text`): the same for every tag, or the checkpoint is refused."""
    probe = "Hello world."
    text = tokenizer.encode(probe).ids
    leads = set()
    for tag, i in tokenizer.get_vocab(with_added_tokens=True).items():
        if MADLAD_LANGUAGE.match(tag):
            ids = tokenizer.encode(f"{tag} {probe}").ids
            lead = ids[: len(ids) - len(text) - 1]
            if ids != [*lead, i, *text]:
                raise ConversionError(f"the tokenizer does not keep {tag} whole in '{tag} {probe}': {ids}")
            leads.add(tuple(lead))
    if len(leads) > 1:
        raise ConversionError(f"the tokenizer writes different ids before different <2xx> tags: {sorted(leads)}")
    return list(leads.pop())
