"""`heed bench engine`: heed vs transformers vs CTranslate2 on the same weights, in one run.

All engines load the reference checkpoint (loadtests/reference.py); heed imports it with its HF
importer (fp32, and int8 dynamic quantization), CTranslate2 converts it (float32, int8),
transformers runs it in PyTorch; the roof engines run only the decoder's matrix products
(loadtests/roof.py), the most any of them could reach on this machine: fp32, and int8 with both
kernels (roof-int8-u8s8: signed weights; roof-int8-u8u8: made unsigned at load), of which heed
runs the one that fits this CPU (service/cpu.py; `roof-int8` is that one alone). Each workload forces 48
target tokens per input, so every engine produces the same number of tokens; throughput is
target tokens per second, the median of `--repeats` rounds after a warm-up, each round running
every engine once in turn, so that drift in the machine's load hits them alike. Prints a table
with ratios, writes JSON and a PNG.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from loadtests.reference import build_checkpoint, source_texts
from loadtests.roof import prepare_roofs, roof_steps

NEW_TOKENS = 48


@dataclass(frozen=True)
class Workload:
    name: str
    batch: int
    beam: int


WORKLOADS = [
    Workload("greedy b1", 1, 1),
    Workload("greedy b8", 8, 1),
    Workload("greedy b32", 32, 1),
    Workload("greedy b64", 64, 1),
    Workload("beam4 b32", 32, 4),
]

Run = Callable[[list[str], int], None]  # generate NEW_TOKENS for each text with this beam size


def heed_engine(model_dir: Path, threads: int) -> Run:
    from service.engine import Engine
    from service.settings import EngineConfig

    # offline: heed has the cores to itself, so ORT's threads may busy-wait (as CTranslate2's do)
    engine = Engine(model_dir, EngineConfig(intra_op_threads=threads, kv_rows=256, provider="cpu", ort_spinning=True))
    options = {"max_new_tokens": NEW_TOKENS, "min_new_tokens": NEW_TOKENS}

    def run(texts: list[str], beam: int) -> None:
        results = engine.generate(texts, options | {"beam_size": beam})
        assert all(r.output_tokens >= NEW_TOKENS - 1 for r in results)  # EOS is stripped from the output

    return run


def transformers_engine(checkpoint: Path, threads: int) -> Run:
    import torch
    from transformers import MarianMTModel, MarianTokenizer

    torch.set_num_threads(threads)
    model = MarianMTModel.from_pretrained(checkpoint).eval()
    tokenizer = MarianTokenizer.from_pretrained(checkpoint)

    def run(texts: list[str], beam: int) -> None:
        batch = tokenizer(texts, return_tensors="pt", padding=True)
        with torch.inference_mode():
            out = model.generate(
                **batch, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, num_beams=beam, do_sample=False
            )
        assert out.shape[1] == NEW_TOKENS + 1

    return run


def ctranslate2_engine(checkpoint: Path, work: Path, quantization: str, threads: int) -> Run:
    import ctranslate2
    from transformers import MarianTokenizer

    out = work / f"ct2-{quantization}"
    if not (out / "model.bin").is_file():
        ctranslate2.converters.TransformersConverter(str(checkpoint)).convert(
            str(out), quantization=quantization, force=True
        )
    translator = ctranslate2.Translator(
        str(out), device="cpu", compute_type=quantization, intra_threads=threads, inter_threads=1
    )
    tokenizer = MarianTokenizer.from_pretrained(checkpoint)

    def run(texts: list[str], beam: int) -> None:
        tokens = [tokenizer.convert_ids_to_tokens(tokenizer(t).input_ids) for t in texts]
        results = translator.translate_batch(
            tokens, beam_size=beam, max_decoding_length=NEW_TOKENS, min_decoding_length=NEW_TOKENS
        )
        assert all(len(r.hypotheses[0]) >= NEW_TOKENS - 1 for r in results)

    return run


ROOF_INT8_KERNELS = {"roof-int8": "auto", "roof-int8-u8s8": "signed", "roof-int8-u8u8": "unsigned"}


def roof_engine(graph: Path, threads: int, int8_kernels: str = "auto") -> Run:
    """The decoder's matrix products alone (loadtests/roof.py): each engine's ceiling here."""
    steps = roof_steps(graph, threads, int8_kernels)

    def run(texts: list[str], beam: int) -> None:
        steps(len(texts) * beam, NEW_TOKENS)

    return run


def timed(
    engines: dict[str, Run], texts: list[str], beam: int, repeats: int, new_tokens: int = NEW_TOKENS
) -> dict[str, float]:
    """Median generated tokens per second of each engine over `repeats` rounds (after a warm-up),
    each run generating `new_tokens` per text.

    Each round runs every engine once, in turn, so that a slow spell of a shared machine slows
    all engines of that round rather than one engine's every run.
    """
    for run in engines.values():
        run(texts[: min(len(texts), 2)], beam)
    seconds: dict[str, list[float]] = {name: [] for name in engines}
    for _ in range(repeats):
        for name, run in engines.items():
            start = time.perf_counter()
            run(texts, beam)
            seconds[name].append(time.perf_counter() - start)
    return {name: len(texts) * new_tokens / statistics.median(times) for name, times in seconds.items()}


def current_export(directory: Path, quantize: str | None) -> bool:
    """False for a cached export of an older format (re-exported, not benchmarked as heed's):
    none at all, graphs holding their own weights (before weights.bin), a decoder that returns new
    K/V instead of writing its cache in place, or unsigned int8 weights."""
    import onnx

    from export.quantize import check_signed_int8
    from service import graph
    from service.manifest import load_manifest

    if (
        not (directory / "manifest.json").is_file()
        or load_manifest(directory, verify_hashes=False).files.weights is None
    ):
        return False
    decoder = onnx.load(str(directory / "decoder.onnx"), load_external_data=False).graph
    if graph.present_outputs(1)[0] not in {o.name for o in decoder.output}:
        return False
    try:
        if quantize:
            check_signed_int8(directory / "decoder.onnx")
    except ValueError:
        return False
    return True


def prepare_heed(checkpoint: Path, work: Path) -> dict[str, Path]:
    from export.hf import export_checkpoint

    dirs = {}
    for quantize in (None, "int8"):
        name = f"heed-{quantize or 'fp32'}"
        directory = work / name
        if not current_export(directory, quantize):
            export_checkpoint(checkpoint, directory, name=name, task="translate", quantize=quantize)
        dirs[name] = directory
    return dirs


def heed_int8_roof() -> str:
    """The int8 roof that runs heed's int8 kernels on this CPU (service/cpu.py)."""
    from service.cpu import choose_int8_kernels

    return "roof-int8-u8s8" if choose_int8_kernels() == "signed" else "roof-int8-u8u8"


def ratio_columns(row: dict[str, float]) -> dict[str, float]:
    int8_roof = "roof-int8" if "roof-int8" in row else heed_int8_roof()
    pairs = {
        "heed-fp32 / ct2-float32": ("heed-fp32", "ct2-float32"),
        "heed-int8 / ct2-int8": ("heed-int8", "ct2-int8"),
        "heed-fp32 / transformers": ("heed-fp32", "transformers"),
        "heed-fp32 / roof-fp32": ("heed-fp32", "roof-fp32"),
        "heed-int8 / roof-int8": ("heed-int8", int8_roof),
        "roof-int8 u8s8 / u8u8": ("roof-int8-u8s8", "roof-int8-u8u8"),
    }
    return {label: row[a] / row[b] for label, (a, b) in pairs.items() if a in row and b in row}


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    engines = [k for k in results[0]["tokens_per_s"]]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    width = 0.8 / len(engines)
    for i, engine in enumerate(engines):
        values = [r["tokens_per_s"].get(engine, 0) for r in results]
        roof = engine.startswith("roof")  # a ceiling, not an engine: hatched
        ax.bar([x + i * width for x in range(len(results))], values, width, label=engine, hatch="//" if roof else None)
    ax.set_xticks([x + 0.4 - width / 2 for x in range(len(results))], [r["workload"] for r in results])
    ax.set_ylabel("target tokens / s")
    ax.set_title("Reference workload (Marian-base size, 24 -> 48 tokens, 2 threads)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="heed bench engine", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--work", type=Path, default=Path("artifacts/bench"), help="checkpoints, converted models, results"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--engines",
        default="heed-fp32,heed-int8,transformers,ct2-float32,ct2-int8,roof-fp32,roof-int8-u8s8,roof-int8-u8u8",
    )
    parser.add_argument("--workloads", default=",".join(w.name for w in WORKLOADS))
    args = parser.parse_args(argv)

    from service.cpu import choose_int8_kernels, cpu_flags

    found = sorted((cpu_flags() or frozenset()) & {"avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8"})
    kernels = choose_int8_kernels()
    print(f"CPU flags: {', '.join(found) or 'none of avx2/avx512/vnni/amx'}; heed int8 kernels here: {kernels}")
    args.work.mkdir(parents=True, exist_ok=True)
    checkpoint = build_checkpoint(args.work / "reference-hf")
    wanted = args.engines.split(",")
    factories: dict[str, Callable[[], Run]] = {
        "transformers": lambda: transformers_engine(checkpoint, args.threads),
        "ct2-float32": lambda: ctranslate2_engine(checkpoint, args.work, "float32", args.threads),
        "ct2-int8": lambda: ctranslate2_engine(checkpoint, args.work, "int8", args.threads),
    }
    if any(e.startswith("roof") for e in wanted):
        graphs = prepare_roofs(checkpoint, args.work)
        factories["roof-fp32"] = lambda: roof_engine(graphs["roof-fp32"], args.threads)
        for name, kernels in ROOF_INT8_KERNELS.items():
            factories[name] = lambda k=kernels: roof_engine(graphs["roof-int8"], args.threads, k)
    if any(e.startswith("heed") for e in wanted):
        for name, directory in prepare_heed(checkpoint, args.work).items():
            factories[name] = lambda d=directory: heed_engine(d, args.threads)
    engines = {name: factories[name]() for name in wanted}
    workloads = [w for w in WORKLOADS if w.name in args.workloads.split(",")]
    texts = source_texts(checkpoint, max(w.batch for w in workloads))

    results = []
    for workload in workloads:
        row = timed(engines, texts[: workload.batch], workload.beam, args.repeats)
        results.append(
            {"workload": workload.name, **asdict(workload), "tokens_per_s": row, "ratios": ratio_columns(row)}
        )
        cells = "  ".join(f"{name} {value:8.1f}" for name, value in row.items())
        ratios = "  ".join(f"{label} {value:.2f}x" for label, value in results[-1]["ratios"].items())
        print(f"{workload.name:11s}  {cells}  |  {ratios}", flush=True)

    (args.work / "engine.json").write_text(
        json.dumps({"threads": args.threads, "cpu_flags": found, "int8_kernels": kernels, "results": results}, indent=2)
    )
    plot(results, args.work / "engine.png")
    print(f"wrote {args.work / 'engine.json'} and {args.work / 'engine.png'}")
    return 0
