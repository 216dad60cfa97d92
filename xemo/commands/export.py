"""`xemo export`: compile the XEmoGPT video and audio front ends to ONNX (and TensorRT), check parity, write
DIR/manifest.json.

Exit codes: 0 all requested artefacts written and parity within tolerance; 1 parity failed (the manifest marks
the graph as not servable); 2 bad arguments or settings; 3 TensorRT requested but not possible on this machine
(the reason is printed; with --format all the ONNX graphs are still written).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from engines.errors import XemoError
from xemo.settings import Settings

FORMATS = ("onnx", "tensorrt", "all")


def run(settings: Settings, out: Path, fmt: str, precision: str) -> int:
    from export.tensorrt_build import PRECISIONS, unavailable_reason

    console = Console(stderr=True)
    fmt, precision = fmt.lower(), precision.lower()
    if settings.profile != "xemogpt":
        console.print(
            "[red]error:[/] export compiles the XEmoGPT front ends; set profile: xemogpt "
            f"(current profile: {settings.profile})"
        )
        return 2
    if fmt not in FORMATS or precision not in PRECISIONS:
        console.print(
            f"[red]error:[/] --format must be one of {', '.join(FORMATS)} and --precision one of "
            f"{', '.join(PRECISIONS)}"
        )
        return 2
    if fmt == "onnx" and precision != "fp32":
        console.print(
            "[red]error:[/] ONNX graphs are exported in fp32 (parity is checked against fp32 PyTorch); "
            "--precision fp16|bf16|int8 applies to TensorRT engines (--format tensorrt|all)"
        )
        return 2
    trt_reason = unavailable_reason() if fmt in ("tensorrt", "all") else None
    if fmt == "tensorrt" and trt_reason:
        console.print(
            f"[yellow]TensorRT export skipped:[/] {trt_reason}. TensorRT engines are built on the GPU "
            "machine that will serve them; here, use --format onnx (export.runtime: onnx)."
        )
        return 3
    if fmt in ("tensorrt", "all") and not trt_reason:
        import tensorrt as trt

        from export.tensorrt_build import precision_plan

        plan = precision_plan(precision, trt.__version__)
        if plan.error:
            console.print(f"[red]error:[/] {plan.error}")
            return 2
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    try:
        return _export(settings, Path(out), fmt, precision, trt_reason, console)
    except XemoError as e:
        console.print(f"[red]error:[/] {e.message}")
        return 2


def _export(settings: Settings, out: Path, fmt: str, precision: str, trt_reason: str | None, console: Console) -> int:
    import contextlib
    import io
    import warnings

    from engines.runtime.onnx import OrtGraph
    from export import manifest as mf
    from export import parity
    from export.onnx_export import audio_spec, export_onnx, video_spec
    from export.sources import SAMPLE_RATE, load_torch_front_ends

    e = settings.export
    max_samples = int(max([*e.audio_buckets_s, settings.xemogpt.max_audio_s]) * SAMPLE_RATE)
    rows: list[parity.ParityRow] = []
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        task = progress.add_task("loading PyTorch front ends", total=None)
        fe = load_torch_front_ends(settings)
        c = fe.contract
        specs = [
            video_spec(c["num_frames"], c["image_size"], c["dim"], e.max_batch),
            audio_spec(c["dim"], e.max_batch, max_samples),
        ]
        steps = sum(1 + len(parity.cases(s)) for s in specs) + 1
        progress.update(task, total=steps, completed=1, description="hashing source weights")
        m = mf.Manifest(
            opset=e.opset,
            contract={**c, "max_batch": e.max_batch, "max_samples": max_samples},
            sources=mf.source_hashes(fe.sources),
            versions=mf.versions(),
            tolerances={"atol": e.atol, "cos_tol": e.cos_tol},
        )
        modules = {"video": fe.video, "audio": fe.audio}
        previous, engines = _reusable(out, m)
        for spec in specs:
            graph = previous.get(spec.name)
            if graph is None:
                progress.update(task, description=f"exporting the {spec.name} graph to ONNX (opset {e.opset})")
                # the exporter prints its own step list and shape-naming warnings; the progress line says it all
                with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    graph = export_onnx(modules[spec.name], spec, out, e.opset)
            else:
                console.print(f"reusing {graph.file}: same weights, opset, contract and exporter versions")
            progress.advance(task)
            ort_graph = OrtGraph(out / graph.file, e.providers, e.intra_op_threads, e.inter_op_threads)
            progress.update(task, description=f"parity of the {spec.name} graph vs PyTorch")
            got = parity.check(
                spec,
                parity.torch_fn(modules[spec.name]),
                lambda x, g=ort_graph: g(*x.values()),
                e.atol,
                e.cos_tol,
                on_case=lambda _name: progress.advance(task),
            )
            rows += got
            if spec.name not in previous:
                engines = []  # engines built from an older graph are stale
            m.graphs[spec.name] = mf.GraphEntry(
                file=graph.file,
                files=graph.files,
                **spec.to_dict(),
                parity=[r.to_dict() for r in got],
                parity_passed=all(r.passed for r in got),
            )
            m.write(out)
        m.tensorrt = engines
        rc = 0
        if fmt in ("tensorrt", "all"):
            if trt_reason:
                m.skipped.append(f"tensorrt: {trt_reason}")
                rc = 3
            else:
                progress.update(task, description=f"building TensorRT engines ({precision})")
                rows += _tensorrt(out, specs, m, modules, settings, precision)
        m.write(out)
        progress.update(task, completed=steps, description="done")
    console.print(_table(rows))
    if trt_reason and fmt == "all":
        console.print(f"[yellow]TensorRT engines skipped:[/] {trt_reason}; the ONNX graphs were written.")
    for r in rows:
        if r.error:
            console.print(f"[red]{r.graph}/{r.case}:[/] {r.error}")
    failed = [f"{r.graph}/{r.case}" for r in rows if not r.passed]
    if failed:
        console.print(
            f"[red]parity FAILED[/] (atol {e.atol}, 1-cos {e.cos_tol}): {', '.join(failed)}; "
            "those graphs are marked not servable in the manifest"
        )
        return 1
    console.print(f"[green]wrote[/] {out / mf.MANIFEST}")
    return rc


def _reusable(out: Path, new: Any) -> tuple[dict[str, Any], list[Any]]:
    """ONNX graphs already in `out` from the same weights, opset, contract and exporter versions (e.g. a
    `--format tensorrt` run on the GPU machine after `--format onnx`): reused, parity is still re-measured.
    Also the TensorRT engines listed for them, kept while both graphs are reused."""
    from engines.errors import ArtifactError
    from export import manifest as mf
    from export.onnx_export import ExportedGraph

    try:
        old = mf.load(out)
    except ArtifactError:
        return {}, []
    same = (old.opset, old.contract, old.sources, old.versions.get("torch"), old.versions.get("onnxscript")) == (
        new.opset,
        new.contract,
        new.sources,
        new.versions.get("torch"),
        new.versions.get("onnxscript"),
    )
    if not same:
        return {}, []
    graphs = {}
    for name, g in old.graphs.items():
        try:
            mf.verify_files(out, g.files, name)
        except ArtifactError:
            continue
        graphs[name] = ExportedGraph(name, g.file, g.files)
    return graphs, list(old.tensorrt)


def _tensorrt(
    out: Path, specs: list[Any], m: Any, modules: dict[str, Any], settings: Settings, precision: str
) -> list[Any]:
    """Build (or reuse) engines, then measure their parity too; engines are listed in the manifest."""
    import copy

    import tensorrt as trt
    import torch

    from engines.runtime.tensorrt import TrtGraph
    from export import parity
    from export.onnx_export import export_onnx
    from export.tensorrt_build import build_all, precision_plan, profiles

    plan = precision_plan(precision, trt.__version__)
    if plan.error:
        raise XemoError(plan.error)
    e = settings.export
    by_name = {s.name: s for s in specs}
    buckets = [int(b * 16000) for b in e.audio_buckets_s]

    def calibration(name: str) -> list[dict[str, Any]]:
        """INT8 calibration runs at the first profile's opt shape. These batches are synthetic (normalised
        noise), so an int8 engine must pass parity below before it is listed as servable."""
        import numpy as np

        rng = np.random.default_rng(0)
        opt = {k: v[1] for k, v in profiles(by_name[name], buckets)[0].shapes.items()}
        batches = []
        for _ in range(4):
            batch = {
                k: (np.ones(shape, np.int64) if k == "attention_mask" else rng.standard_normal(shape, dtype=np.float32))
                for k, shape in opt.items()
            }
            batches.append(batch)
        return batches

    graphs = {s.name: (s, m.graphs[s.name].file, m.graphs[s.name].files) for s in specs}
    if plan.graph_dtype != "float32":  # TensorRT 11: the precision lives in the graph's types
        dtype = getattr(torch, plan.graph_dtype)
        for s in specs:
            typed = copy.deepcopy(modules[s.name]).to(dtype)
            g = export_onnx(typed, s, out / "tensorrt", e.opset, stem=f"{s.name}.{precision}", dtype=dtype)
            graphs[s.name] = (s, f"tensorrt/{g.file}", {f"tensorrt/{k}": v for k, v in g.files.items()})
    built = build_all(out, graphs, precision, buckets, e.trt_workspace_mb, calibration)
    rows = []
    for b in built:
        m.tensorrt = [x for x in m.tensorrt if not (x.graph == b.graph and x.precision == b.precision)]
        m.tensorrt.append(b)
        g = TrtGraph(out / b.file, b.profiles)

        def trt_fn(inputs: dict[str, Any], g: Any = g) -> list[Any]:
            return [o.cpu().numpy() for o in g(*inputs.values())]

        got = parity.check(by_name[b.graph], parity.torch_fn(modules[b.graph]), trt_fn, e.atol, e.cos_tol)
        for r in got:
            r.graph = f"{r.graph}-trt-{precision}"
        b.parity = [r.to_dict() for r in got]
        rows += got
    return rows


def _table(rows: list[Any]) -> Table:
    t = Table(title="parity vs PyTorch")
    for col in ("graph", "case", "input shape", "max |diff|", "1 - cos", "ok"):
        t.add_column(col)
    for r in rows:
        t.add_row(
            r.graph,
            r.case,
            r.shape,
            f"{r.max_abs:.2e}",
            f"{r.one_minus_cos:.2e}",
            "[green]yes[/]" if r.passed else "[red]NO[/]",
        )
    return t
