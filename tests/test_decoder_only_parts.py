"""The pieces decoder-only models add to heed's family, each against a naive reference (plain
loops and textbook formulas), and the decoder-only model's cached decoding against its own full
recomputation."""

from __future__ import annotations

import math

import pytest
import torch

from export.decoder_model import DecoderOnlyModel
from export.model import FeedForward, RMSNorm
from export.rope import RotaryEmbedding, apply_rotary, inverse_frequencies
from service.manifest import ModelSpec, Rotary

transformers = pytest.importorskip("transformers")

SCALINGS = {
    "none": Rotary(theta=500.0),
    "linear": Rotary(theta=10000.0, scaling="linear", factor=2.5),
    "llama3": Rotary(
        theta=500.0, scaling="llama3", factor=4.0, low_freq_factor=1.0, high_freq_factor=4.0, original_max_positions=64
    ),
}


def naive_inverse_frequencies(rotary: Rotary, dim: int) -> list[float]:
    """The published rules in plain float64 Python: RoPE's theta^(-2i/d); linear scaling divides by
    the factor; Llama 3.1 divides low frequencies, keeps high ones and interpolates between."""
    out = []
    for i in range(0, dim, 2):
        f = rotary.theta ** (-i / dim)
        if rotary.scaling == "linear":
            f /= rotary.factor
        elif rotary.scaling == "llama3":
            context = rotary.original_max_positions
            wavelength = 2 * math.pi / f
            if wavelength > context / rotary.low_freq_factor:
                f /= rotary.factor
            elif wavelength >= context / rotary.high_freq_factor:
                smooth = (context / wavelength - rotary.low_freq_factor) / (
                    rotary.high_freq_factor - rotary.low_freq_factor
                )
                f = (1 - smooth) * f / rotary.factor + smooth * f
        out.append(f)
    return out


@pytest.mark.parametrize("scaling", sorted(SCALINGS))
def test_inverse_frequencies_follow_the_rules_and_transformers(scaling):
    rotary, dim = SCALINGS[scaling], 8
    ours = inverse_frequencies(rotary, dim)
    assert ours.dtype == torch.float32
    assert torch.allclose(
        ours.double(), torch.tensor(naive_inverse_frequencies(rotary, dim), dtype=torch.float64), rtol=1e-6
    )
    if scaling == "llama3":  # the three bands all occur at this size
        base = inverse_frequencies(Rotary(theta=rotary.theta), dim)
        ratios = (base / ours).tolist()
        assert ratios[0] == 1 and ratios[-1] == pytest.approx(4) and 1 < ratios[1] < 4
    kind = {"none": "default"}.get(scaling, scaling)
    params = {"rope_type": kind, "rope_theta": rotary.theta}
    if scaling != "none":
        params["factor"] = rotary.factor
    if scaling == "llama3":
        params |= {"low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 64}
    config = transformers.LlamaConfig(
        hidden_size=16, num_attention_heads=2, max_position_embeddings=128, rope_parameters=params
    )
    theirs = transformers.models.llama.modeling_llama.LlamaRotaryEmbedding(config).inv_freq
    assert torch.equal(ours, theirs)


def naive_rotation(x: torch.Tensor, position: int, frequencies: list[float]) -> torch.Tensor:
    """Rotate each pair (i, i + d/2) of a vector by position * f_i, one pair at a time."""
    half = len(frequencies)
    out = x.clone().double()
    for i, f in enumerate(frequencies):
        angle = position * f
        a, b = float(x[i]), float(x[i + half])
        out[i] = a * math.cos(angle) - b * math.sin(angle)
        out[i + half] = a * math.sin(angle) + b * math.cos(angle)
    return out


def test_rotary_embedding_rotates_each_pair_by_its_angle():
    torch.manual_seed(0)
    rotary, dim = SCALINGS["llama3"], 8
    positions = torch.tensor([[0, 3, 17], [5, 1, 90]])
    x = torch.randn(2, 3, 3, dim)  # [B, H, T, D]
    cos, sin = RotaryEmbedding(rotary, dim)(positions)
    got = apply_rotary(x, cos, sin)
    frequencies = naive_inverse_frequencies(rotary, dim)
    for b in range(2):
        for h in range(3):
            for t in range(3):
                want = naive_rotation(x[b, h, t], int(positions[b, t]), frequencies)
                assert torch.allclose(got[b, h, t].double(), want, atol=1e-5)


def test_rotated_scores_depend_only_on_the_distance():
    torch.manual_seed(1)
    embedding = RotaryEmbedding(Rotary(theta=100.0), 8)
    q, k = torch.randn(1, 1, 1, 8), torch.randn(1, 1, 1, 8)

    def score(q_pos: int, k_pos: int) -> float:
        qc, qs = embedding(torch.tensor([[q_pos]]))
        kc, ks = embedding(torch.tensor([[k_pos]]))
        return float((apply_rotary(q, qc, qs) * apply_rotary(k, kc, ks)).sum())

    assert score(7, 3) == pytest.approx(score(44, 40), abs=1e-4)
    assert score(7, 3) != pytest.approx(score(7, 4), abs=1e-3)


def test_rmsnorm_is_the_textbook_formula():
    torch.manual_seed(2)
    norm = RMSNorm(6, eps=1e-6)
    norm.weight.data = torch.randn(6)
    x = torch.randn(3, 6)
    for row in range(3):
        rms = math.sqrt(sum(float(v) ** 2 for v in x[row]) / 6 + 1e-6)
        want = [float(w) * float(v) / rms for w, v in zip(norm.weight.detach(), x[row])]
        assert norm(x)[row].tolist() == pytest.approx(want, abs=1e-6)


def spec(**overrides) -> ModelSpec:
    base = dict(
        vocab_size=40,
        d_model=24,
        n_heads=6,
        n_kv_heads=2,
        d_head=4,
        d_ff=20,
        encoder=None,
        decoder={"layers": 2, "attention": {"kind": "causal"}},
        activation="silu",
        gated_ffn=True,
        norm="rmsnorm",
        pre_norm=True,
        final_norm=True,
        positions="rotary",
        rotary=SCALINGS["llama3"],
        qkv_bias=True,
        out_bias=False,
        ffn_bias=False,
        tie_lm_head=False,
        max_positions=64,
    )
    return ModelSpec.model_validate(base | overrides)


def test_swiglu_is_down_of_silu_gate_times_up():
    torch.manual_seed(3)
    ffn = FeedForward(spec())
    x = torch.randn(2, 24)
    gate, up, down = (layer.weight.detach() for layer in (ffn.fc_in, ffn.fc_gate, ffn.fc_out))
    for row in range(2):
        hidden = []
        for j in range(20):
            g = float(gate[j] @ x[row])
            hidden.append(g / (1 + math.exp(-g)) * float(up[j] @ x[row]))
        want = [sum(float(down[i, j]) * hidden[j] for j in range(20)) for i in range(24)]
        assert ffn(x)[row].tolist() == pytest.approx(want, abs=1e-5)


def test_attention_biases_follow_the_spec():
    """Qwen2: biases on Q, K and V only; Llama with attention_bias: on the output projection too."""
    attention = DecoderOnlyModel(spec()).layers[0].self_attn.inner
    assert [p.bias is not None for p in (attention.q_proj, attention.k_proj, attention.v_proj)] == [True] * 3
    assert attention.o_proj.bias is None
    assert DecoderOnlyModel(spec(out_bias=None)).layers[0].self_attn.inner.o_proj.bias is not None


VARIANTS = {
    "llama-gqa-rope": spec(),
    "qwen-mqa-window": spec(n_kv_heads=1, decoder={"layers": 2, "attention": {"kind": "local", "window": 3}}),
    "gpt2-learned-tied": spec(
        n_kv_heads=None,
        d_head=None,
        n_heads=3,
        positions="learned",
        rotary=None,
        norm="layernorm",
        activation="gelu_tanh",
        gated_ffn=False,
        qkv_bias=True,
        out_bias=None,
        ffn_bias=True,
        tie_lm_head=True,
    ),
}


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_cached_decoding_equals_full_recomputation(name):
    """Prefill of a right-padded batch, then one token per step with every row at its own
    position over a cache with garbage in its unwritten slots: the logits of the uncached pass."""
    torch.manual_seed(4)
    model = DecoderOnlyModel(VARIANTS[name]).eval()
    with torch.no_grad():
        for p in model.parameters():  # varied biases and norm weights: every parameter matters
            p.add_(torch.randn_like(p) * 0.1)
    prompts, steps = [6, 2, 4], 5
    ids = torch.randint(0, 40, (3, 6 + steps))
    with torch.no_grad():
        reference = model(ids)
        positions = torch.arange(6).expand(3, 6)
        garbage = torch.full((3, model.spec.kv_heads, 6, model.spec.head_dim), 1e3)
        hidden, prefilled = model.decode(ids[:, :6], positions, [(garbage, garbage)] * 2)
        for b, n in enumerate(prompts):
            assert torch.allclose(model.logits(hidden)[b, :n], reference[b, :n], atol=1e-5)
        cache = [[torch.full((3, model.spec.kv_heads, 20, model.spec.head_dim), 1e3) for _ in kv] for kv in prefilled]
        for layer, kv in enumerate(prefilled):
            for j, t in enumerate(kv):
                for b, n in enumerate(prompts):
                    cache[layer][j][b, :, :n] = t[b, :, :n]
        at = torch.tensor(prompts)
        rows = torch.arange(3)
        for _ in range(steps):
            hidden, present = model.decode(ids[rows, at][:, None], at[:, None], [tuple(kv) for kv in cache])
            assert torch.allclose(model.logits(hidden)[:, 0], reference[rows, at], atol=1e-5)
            for layer, kv in enumerate(present):  # the cache with the new token written at each row's position
                for j, t in enumerate(kv):
                    written = cache[layer][j].clone()
                    written[rows, :, at] = t[rows, :, at]
                    assert torch.equal(t, written), "present differs from the cache beyond the new slots"
            cache = [list(kv) for kv in present]
            at = at + 1


def test_specs_refuse_what_a_decoder_only_model_cannot_be():
    with pytest.raises(ValueError, match="rotary"):
        spec(rotary=None)
    with pytest.raises(ValueError, match="even head size"):
        spec(d_head=5, d_model=30)
    with pytest.raises(ValueError, match="needs an encoder"):
        spec(positions="relative", rotary=None)
    with pytest.raises(ValueError, match="original_max_positions"):
        Rotary(scaling="llama3", factor=8.0)
