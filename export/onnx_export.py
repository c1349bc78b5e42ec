"""Export a `Seq2SeqModel` to the two ONNX graphs the runtime drives, or a `DecoderOnlyModel` to its
one decoder graph, as `service/graph.py` names them. Searches choose among the `top_k` best tokens
of each row, computed in the graph (`add_token_choice`), so that a step hands Python a few numbers
per row instead of the whole vocabulary's logits.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import onnx
import torch
from onnx import TensorProto, helper
from torch import Tensor, nn

from export.cached_attention import place_attention_bias
from export.decoder_model import DecoderOnlyModel
from export.model import Seq2SeqModel
from service import graph

OPSET = 18


def _pairs(flat: tuple[Tensor, ...]) -> list[tuple[Tensor, Tensor]]:
    return [(flat[i], flat[i + 1]) for i in range(0, len(flat), 2)]


class EncoderGraph(nn.Module):
    def __init__(self, model: Seq2SeqModel):
        super().__init__()
        self.model = model

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> tuple[Tensor, ...]:
        return tuple(t for kv in self.model.encode(input_ids, attention_mask) for t in kv)


class DecoderGraph(nn.Module):
    def __init__(self, model: Seq2SeqModel):
        super().__init__()
        self.model = model
        self.layers = len(model.decoder_layers)

    def forward(self, input_ids: Tensor, positions: Tensor, source_mask: Tensor, *cache: Tensor):
        past, cross = _pairs(cache[: 2 * self.layers]), _pairs(cache[2 * self.layers :])
        logits, new, alignment = self.model.decode(input_ids, positions, past, cross, source_mask)
        return (logits, *(t for kv in new for t in kv), alignment)


def example_inputs(model: Seq2SeqModel, batch: int = 2, source: int = 5, new: int = 2, past: int = 3, slots: int = 7):
    """Inputs for tracing: `new` tokens after `past` cached ones, in a cache of `slots` positions;
    sizes are all distinct and > 1 so no axis is specialized."""
    spec = model.spec
    layers = len(model.decoder_layers)
    ids = torch.randint(0, spec.vocab_size, (batch, source))
    mask = torch.ones(batch, source, dtype=torch.int64)
    kv = lambda t: torch.zeros(batch, spec.kv_heads, t, spec.head_dim)  # noqa: E731
    dec_ids = torch.randint(0, spec.vocab_size, (batch, new))
    positions = torch.arange(past, past + new).unsqueeze(0).expand(batch, new).contiguous()
    cache = [kv(slots) for _ in range(2 * layers)] + [kv(source) for _ in range(2 * layers)]
    return (ids, mask), (dec_ids, positions, mask, *cache)


class DecoderOnlyGraph(nn.Module):
    def __init__(self, model: DecoderOnlyModel):
        super().__init__()
        self.model = model

    def forward(self, input_ids: Tensor, positions: Tensor, logit_index: Tensor, *past: Tensor):
        hidden, new = self.model.decode(input_ids, positions, _pairs(past))
        d_model = self.model.spec.d_model
        picked = hidden.gather(1, logit_index.unsqueeze(-1).expand(-1, -1, d_model))  # the LM head only there
        return (self.model.logits(picked), *(t for kv in new for t in kv))


def export_decoder_only(model: DecoderOnlyModel, out_dir: Path) -> Path:
    """Write a decoder-only model's decoder.onnx (fp32, dynamic batch, new, logit and past axes)."""
    model = model.eval()
    spec, layers = model.spec, len(model.layers)
    batch, new, past_len, slots = 2, 3, 4, 9  # distinct and > 1: no axis specialized
    ids = torch.randint(0, spec.vocab_size, (batch, new))
    positions = torch.arange(past_len, past_len + new).unsqueeze(0).expand(batch, new).contiguous()
    logit_index = torch.tensor([[0, 2], [1, 2]])
    past = [torch.zeros(batch, spec.kv_heads, slots, spec.head_dim) for _ in range(2 * layers)]
    ids_name, positions_name, index_name = graph.DECODER_ONLY_INPUTS
    axes = (
        {ids_name: {0: "batch", 1: "new"}, positions_name: {0: "batch", 1: "new"}}
        | {index_name: {0: "batch", 1: "picked"}, graph.LOGITS: {0: "batch", 1: "picked"}}
        | {n: {0: "batch", 2: "past"} for n in graph.past_inputs(layers)}
        | {n: {0: "batch", 2: "past"} for n in graph.present_outputs(layers)}
    )
    path = out_dir / "decoder.onnx"
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # traced shape arithmetic, as for the seq2seq graphs
        torch.onnx.export(
            DecoderOnlyGraph(model).eval(),
            (ids, positions, logit_index, *past),
            path,
            input_names=[*graph.DECODER_ONLY_INPUTS, *graph.past_inputs(layers)],
            output_names=[graph.LOGITS, *graph.present_outputs(layers)],
            dynamic_axes=axes,
            opset_version=OPSET,
            dynamo=False,
        )
    finish_decoder(path)
    return path


def export_graphs(model: Seq2SeqModel, out_dir: Path) -> tuple[Path, Path]:
    """Write encoder.onnx and decoder.onnx (fp32, dynamic batch and length axes).

    Uses the TorchScript-based exporter: heed's model is plain tensor ops with no data-dependent
    control flow, which it traces exactly, and far faster than the dynamo exporter (docs/performance.md).
    """
    model = model.eval()
    layers = len(model.decoder_layers)
    enc_args, dec_args = example_inputs(model)
    cross, past, present = graph.cross_inputs(layers), graph.past_inputs(layers), graph.present_outputs(layers)
    source_axes = {0: "batch", 1: "source"}
    enc_axes = dict.fromkeys(graph.ENCODER_INPUTS, source_axes) | {n: {0: "batch", 2: "source"} for n in cross}
    ids, positions, source_mask = graph.DECODER_INPUTS
    dec_axes = (
        {ids: {0: "batch", 1: "new"}, positions: {0: "batch", 1: "new"}, source_mask: source_axes}
        | {n: {0: "batch", 2: "past"} for n in past}
        | {n: {0: "batch", 2: "source"} for n in cross}
        | {graph.LOGITS: {0: "batch", 1: "new"}}
        | {n: {0: "batch", 2: "past"} for n in present}
        | {graph.CROSS_ATTENTION: {0: "batch", 2: "new", 3: "source"}}
    )
    encoder_path, decoder_path = out_dir / "encoder.onnx", out_dir / "decoder.onnx"
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter warns about traced shape arithmetic, which is intended
        torch.onnx.export(
            EncoderGraph(model).eval(),
            enc_args,
            encoder_path,
            input_names=list(graph.ENCODER_INPUTS),
            output_names=graph.encoder_outputs(layers),
            dynamic_axes=enc_axes,
            opset_version=OPSET,
            dynamo=False,
        )
        torch.onnx.export(
            DecoderGraph(model).eval(),
            dec_args,
            decoder_path,
            input_names=[*graph.DECODER_INPUTS, *graph.cache_inputs(layers)],
            output_names=[graph.LOGITS, *present, graph.CROSS_ATTENTION],
            dynamic_axes=dec_axes,
            opset_version=OPSET,
            dynamo=False,
        )
    finish_decoder(decoder_path)
    return encoder_path, decoder_path


def finish_decoder(decoder_path: Path) -> None:
    """What torch's exporter cannot write: the cached attention's bias in its input slot, and the
    token choice."""
    model = onnx.load(str(decoder_path))
    place_attention_bias(model.graph.node)
    add_token_choice(model)
    onnx.checker.check_model(model)
    onnx.save(model, str(decoder_path))


def add_token_choice(model: onnx.ModelProto) -> None:
    """Append the choice inputs `top_k` [1] and `with_logprobs` [1] (bool) and the outputs
    `top_ids`, `top_logits`, `top_logprobs` `[B, T, K]`: each position's K best tokens, best first.

    `top_logprobs` are log-probabilities when `with_logprobs` is true: ONNX Runtime's LogSoftmax
    over the vocabulary (one vectorized pass, adding a quarter of what the Max/Sub/Exp/Sum/Log it
    replaces added to a step: docs/performance.md), read at the K best tokens. Otherwise they are
    the logits again: an `If` skips the softmax over the vocabulary, which greedy decoding does not
    need.
    """
    top_k, with_logprobs = graph.CHOICE_INPUTS
    top_ids, top_logits, top_logprobs = graph.TOP_OUTPUTS
    logits = graph.LOGITS
    body = model.graph
    logprobs = helper.make_graph(
        [
            helper.make_node("LogSoftmax", [logits], ["choice_all_logprobs"], axis=-1),
            helper.make_node("GatherElements", ["choice_all_logprobs", top_ids], ["choice_logprobs"], axis=-1),
        ],
        "logprobs",
        [],
        [helper.make_tensor_value_info("choice_logprobs", TensorProto.FLOAT, None)],
    )
    same = helper.make_graph(
        [helper.make_node("Identity", [top_logits], ["choice_same"])],
        "logits",
        [],
        [helper.make_tensor_value_info("choice_same", TensorProto.FLOAT, None)],
    )
    body.node.extend(
        [
            helper.make_node("TopK", [logits, top_k], [top_logits, top_ids], axis=-1),
            helper.make_node("If", [with_logprobs], [top_logprobs], then_branch=logprobs, else_branch=same),
        ]
    )
    body.input.extend(
        [
            helper.make_tensor_value_info(top_k, TensorProto.INT64, [1]),
            helper.make_tensor_value_info(with_logprobs, TensorProto.BOOL, [1]),
        ]
    )
    body.output.extend(
        [
            helper.make_tensor_value_info(top_ids, TensorProto.INT64, ["batch", "new", "k"]),
            helper.make_tensor_value_info(top_logits, TensorProto.FLOAT, ["batch", "new", "k"]),
            helper.make_tensor_value_info(top_logprobs, TensorProto.FLOAT, ["batch", "new", "k"]),
        ]
    )
