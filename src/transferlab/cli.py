"""The ``transferlab`` command line: parses, calls `transferlab.api`, prints. User mistakes print one line."""

from __future__ import annotations

import csv
import functools
import inspect
import json
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Optional

import typer

from transferlab.cli_options import method_settings_lines, methods_markdown, with_settings_as_options
from transferlab.errors import TransferlabError

app = typer.Typer(
    name="transferlab",
    help="Transfer learning from pretrained models: fine-tuning, feature extraction and baselines, fast on a CPU.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

log = logging.getLogger("transferlab")


def _setup_logging(quiet: bool) -> None:
    if quiet:  # read by huggingface_hub / transformers when they are first imported
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    quiet = quiet or _other_rank()
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, format="%(message)s", stream=sys.stderr)
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # which CPU build of FAISS it loaded
    logging.captureWarnings(True)
    warnings.simplefilter("default")


def _user_errors(command):
    """Print a `TransferlabError` (or a file-system error) as ``error: ...`` and exit 2, without a traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except (TransferlabError, FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError) as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        except FloatingPointError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from None

    return wrapper


def _fit(**given):
    """Train a model on your data and write a run directory.

    Every method's settings are flags here, grouped by the methods that take them; a flag the chosen method does
    not take is refused. 'transferlab methods METHOD' lists one method's settings with their defaults.
    """
    config_file, quiet = given.pop("config"), given.pop("quiet")
    _setup_logging(quiet)
    from transferlab.api import fit as fit_run
    from transferlab.api import resolve_config

    result = fit_run(resolve_config(given, config_file=config_file, source="command line"), progress=not quiet)
    _print_fit_summary(result)


app.command("fit")(_user_errors(with_settings_as_options(_fit)))


def _print_fit_summary(result) -> None:
    metrics = result.metrics
    lines = [f"run directory: {result.run_dir}", f"training time: {metrics['train_seconds']:.1f} s"]
    lines += result.notes
    for role in ("val", "test"):
        if role in metrics:
            lines += [f"{role} {line}" for line in result.model.metric_lines(metrics[role])]
    typer.echo("\n".join(lines))


@app.command()
@_user_errors
def methods(
    method: Optional[str] = typer.Argument(None, help="A method: list its settings with their defaults."),
    markdown: bool = typer.Option(False, "--markdown", help="Every method and its own settings as Markdown."),
):
    """The transfer methods, or one method's settings with their defaults and help."""
    from transferlab.methods import METHODS, get_method

    if markdown:
        typer.echo(methods_markdown())
        return
    if method is None:
        width = max(map(len, METHODS))
        typer.echo("\n".join(f"{name.ljust(width)}  {spec.summary}" for name, spec in METHODS.items()))
        return
    spec = get_method(method)
    typer.echo(f"{spec.name}: {spec.summary}\nsettings (--flag [default]: help):")
    for line in method_settings_lines(spec):
        typer.echo(f"  {line}")


@app.command()
@_user_errors
def evaluate(
    target: Path = typer.Argument(..., help="A run directory written by 'transferlab fit', or an embeddings directory "
                                  "written by 'transferlab embed'."),
    data: Optional[str] = typer.Option(None, help="Labeled data spec to evaluate a run directory on."),
    query: Optional[Path] = typer.Option(None, help="Embeddings directory: queries that search TARGET's embeddings "
                                         "(default: leave-one-out within them)."),
    text_column: Optional[str] = typer.Option(None, help="Text column of text data (default: text, else sentence)."),
    label_column: str = typer.Option("label", help="Label column of text data."),
    task: Optional[str] = typer.Option(None, help="Multi-task runs: evaluate this task alone (data labeled for it)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    skip_bad_files: bool = typer.Option(False, "--skip-bad-files", help="Skip unreadable images with a warning."),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
):
    """Accuracy, macro-F1 and confusion matrix of a trained model on labeled data (a detector: COCO-style mAP and
    per-class AP); or, for labeled embeddings, retrieval (recall@k, mAP@R, R-precision) and clustering (NMI, ARI of
    k-means) quality."""
    _setup_logging(quiet or as_json)
    from transferlab.api import evaluate_path
    from transferlab.data.text_tables import TextColumns

    result = evaluate_path(target, data=data, query=query, task=task, skip_bad_files=skip_bad_files,
                           columns=TextColumns(text_column, label_column))
    typer.echo(json.dumps(result.metrics) if as_json else "\n".join(result.lines))


@app.command()
@_user_errors
def predict(
    run_dir: Path = typer.Argument(..., help="A run directory written by 'transferlab fit'."),
    inputs: list[Path] = typer.Argument(..., help="Image or audio files and/or folders of them, or one text table "
                                        "(CSV/TSV/JSONL with a text column)."),
    output_format: str = typer.Option("csv", "--format", help="csv | json | coco (COCO results JSON: detectors)."),
    draw: Optional[Path] = typer.Option(None, help="Detectors: write each image with its boxes drawn into this "
                                        "folder (under its own file name; never over an input)."),
    score_threshold: Optional[float] = typer.Option(None, help="Detectors: leave out boxes scoring less (default: "
                                                    "the run's score_threshold, 0.5 unless set when fitting)."),
    text_column: Optional[str] = typer.Option(None, help="Text column of a text table (default: text, else sentence)."),
    engine: str = typer.Option("torch", help="torch (the model) | onnx (the run's model.onnx, written by 'transferlab "
                               "export', under onnxruntime; the same rows)."),
    skip_bad_files: bool = typer.Option(False, "--skip-bad-files", help="Skip unreadable images with a warning."),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
):
    """Predict each image, clip or text: label and class probabilities, a transcript, or a detector's boxes."""
    _setup_logging(quiet)
    from transferlab.api import check_prediction_request, load
    from transferlab.data import examples_from_paths
    from transferlab.data.text_tables import TextColumns
    from transferlab.export import open_engine

    model = load(run_dir)
    check_prediction_request(model, output_format, draw=draw is not None, score_threshold=score_threshold)
    predictor = open_engine(model, run_dir, engine)  # before reading the inputs: a missing export is the problem
    data = examples_from_paths(inputs, skip_bad_files=skip_bad_files, columns=TextColumns(text_column))
    rows = predictor.predict(data, score_threshold=score_threshold)
    key, names = ("text", data.texts) if hasattr(data, "texts") else ("path", [str(p) for p in data.paths])
    if draw is not None:
        written = model.draw_predictions(data, rows, draw)
        log.info("drew the predictions of %d images into %s", len(written), draw)
    if output_format == "json":
        typer.echo(json.dumps([{key: name, **row} for name, row in zip(names, rows, strict=True)], indent=2))
        return
    if output_format != "csv":
        typer.echo(model.format_predictions(rows, names, output_format))
        return
    columns, lines = model.prediction_lines(rows)
    writer = csv.writer(sys.stdout)
    writer.writerow([key, *columns])
    writer.writerows([names[index], *cells] for index, cells in lines)


@app.command()
@_user_errors
def export(
    run_dir: Path = typer.Argument(..., help="A run directory written by 'transferlab fit'."),
    export_format: str = typer.Option(..., "--format", help="onnx."),
    out: Optional[Path] = typer.Option(None, help="File to write (default: RUN_DIR/model.onnx); FILE.json (classes, "
                                       "preprocessing, parity) and, for text, FILE.preprocessing/ go beside it."),
    opset: Optional[int] = typer.Option(None, help="ONNX opset (default: the exporter's)."),
    data: Optional[str] = typer.Option(None, help="Data to check the export on (its first 32 examples): a file, a "
                                       "folder, a manifest or text table, a data spec such as sklearn-digits; "
                                       "default: made-up inputs of the right shape."),
    text_column: Optional[str] = typer.Option(None, help="Text column of a --data text table."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing export."),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
):
    """Export a trained model to ONNX (outputs: probabilities, or values for regression tasks), checked against
    PyTorch with onnxruntime: the export fails, writing nothing, unless every output agrees within atol 1e-4 +
    rtol 1e-3 and every example keeps its decisions (top class; multi-label: each class at >= 0.5)."""
    _setup_logging(quiet)
    from transferlab.api import export as export_run
    from transferlab.data.text_tables import TextColumns
    from transferlab.export import agreement_text

    result = export_run(run_dir, out, output_format=export_format, opset=opset, data=data, overwrite=overwrite,
                        columns=TextColumns(text_column))
    meta, parity = result.metadata, result.metadata["parity"]
    typer.echo(f"exported {meta['kind']} ({meta['exporter']} exporter, opset {meta['opset']}) -> {result.path}")
    typer.echo(f"parity on {parity['examples']} examples of {parity['data']}: max abs difference "
               f"{parity['max_abs_diff']:.2e}{agreement_text(parity)}")
    typer.echo(f"metadata (classes, preprocessing, parity) -> {result.metadata_path}")


@app.command()
@_user_errors
def serve(
    run_dir: Path = typer.Argument(..., help="A run directory written by 'transferlab fit'."),
    host: str = typer.Option("127.0.0.1", help="Interface to listen on (loopback by default; 0.0.0.0 for all, "
                             "with --api-key-file)."),
    port: int = typer.Option(8000, help="Port."),
    engine: str = typer.Option("torch", help="torch | onnx (the run's model.onnx from 'transferlab export')."),
    workers: int = typer.Option(1, help="Server processes, each holding the model."),
    max_batch: int = typer.Option(32, help="Concurrent requests are batched together up to this many examples per "
                                  "model call; a larger request runs alone, split into such calls."),
    max_items: int = typer.Option(64, help="Examples per request."),
    max_request_mb: float = typer.Option(20.0, help="Largest request body, in MiB."),
    timeout: float = typer.Option(30.0, help="Seconds a request may wait for its predictions."),
    api_key_file: Optional[Path] = typer.Option(None, help="File whose first line is the API key that /predict and "
                                                "/metadata then need in the X-API-Key header."),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
):
    """Serve a trained model over HTTP: POST /predict (image files or JSON texts, several per request), GET /health,
    GET /metadata, OpenAPI at /docs."""
    _setup_logging(quiet)
    from transferlab.export.inputs import require_package

    for package in ("fastapi", "uvicorn", "python_multipart"):
        require_package(package, "transferlab serve")
    from transferlab.serving import ServeSettings
    from transferlab.serving import serve as serve_run

    settings = ServeSettings(max_batch=max_batch, max_items=max_items, timeout=timeout,
                             max_request_bytes=int(max_request_mb * 1024 * 1024))
    serve_run(run_dir, host=host, port=port, engine=engine, workers=workers, settings=settings,
              api_key_file=api_key_file)


@app.command()
@_user_errors
def demo(
    out: Optional[Path] = typer.Option(None, help="Keep the demo's run directories here (default: a temp folder)."),
    labels_per_class: int = typer.Option(10, help="Labeled training images per digit class."),
    seed: int = typer.Option(0, help="Random seed."),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
):
    """Offline demo: ImageNet EfficientNet-Lite0 -> UCI digits with few labels; scratch vs features vs finetune."""
    _setup_logging(quiet)
    from transferlab.demo import run_demo

    typer.echo(run_demo(out=out, labels_per_class=labels_per_class, seed=seed, progress=not quiet))


@app.command()
@_user_errors
def embed(
    data: str = typer.Argument(..., help="Data spec to embed: image/audio folders, a CSV/JSONL manifest or text table, "
                               "a built-in set; every split, or the one @split names."),
    out: Path = typer.Option(..., help="Embeddings directory to write (vectors.npy, items.csv, embedding.json)."),
    backbone: Optional[str] = typer.Option(None, help="Backbone name, or a run directory (its fine-tuned backbone). "
                                           "Default: the offline default of the data's modality."),
    weights: Optional[Path] = typer.Option(None, help="Local weights file for the backbone."),
    pretrained: bool = typer.Option(True, "--pretrained/--no-pretrained", help="Pretrained weights (or random)."),
    image_size: Optional[int] = typer.Option(None, help="Input size of image backbones (default: the backbone's)."),
    max_length: int = typer.Option(128, help="Tokens kept per text."),
    pca: Optional[int] = typer.Option(None, help="Project on this many principal directions, fitted on these "
                                      "embeddings (no labels); queries are projected the same way."),
    whiten: bool = typer.Option(False, "--whiten", help="PCA-whiten (with --pca N components, else those explaining "
                                "90%% of the variance)."),
    precision: str = typer.Option("auto", help="auto | fp32 | bf16."),
    engine: str = typer.Option("auto", help="auto | torch | onnx (the backbone exported once to ONNX, cached, run "
                               "by onnxruntime: CPU, fp32; faster where the CPU has no bf16). auto: onnx where it is "
                               "faster (image backbones in fp32 on the CPU, enough images), else torch."),
    batch_size: int = typer.Option(32, help="Examples per forward pass."),
    text_column: Optional[str] = typer.Option(None, help="Text column of text data (default: text, else sentence)."),
    label_column: str = typer.Option("label", help="Label column of text data (kept when present)."),
    skip_bad_files: bool = typer.Option(False, "--skip-bad-files", help="Skip unreadable files with a warning."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing embeddings directory."),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
):
    """Embed every example with a frozen backbone, for retrieval, clustering or your own tools (cached: a rerun
    embeds only new or changed files)."""
    _setup_logging(quiet)
    from transferlab.data.text_tables import TextColumns
    from transferlab.engine.onnx_features import FEATURE_ENGINES
    from transferlab.unsupervised import BackboneSource, embed_data, write_embeddings

    if engine not in FEATURE_ENGINES:  # before loading data and backbone
        raise TransferlabError(f"engine must be one of {', '.join(FEATURE_ENGINES)}, got {engine!r}")
    source = BackboneSource(backbone, weights=str(weights) if weights else None, pretrained=pretrained,
                            image_size=image_size, max_length=max_length)
    embeddings = embed_data(data, source, pca=pca, whiten=whiten, precision=precision, batch_size=batch_size,
                            skip_bad_files=skip_bad_files, columns=TextColumns(text_column, label_column),
                            progress=not quiet, engine=engine)
    write_embeddings(embeddings, out, overwrite=overwrite)
    labeled = len(embeddings.labeled()) if embeddings.labels is not None else 0
    projection = f", {embeddings.projection.describe()['kind']}" if embeddings.projection is not None else ""
    typer.echo(f"embedded {len(embeddings)} examples ({labeled} labeled) as {embeddings.dim}-dimensional vectors of "
               f"{embeddings.info['backbone']['name']}{projection} -> {out}")


@app.command("index")
@_user_errors
def build_index(
    embeddings: Path = typer.Argument(..., help="An embeddings directory written by 'transferlab embed'."),
    out: Path = typer.Option(..., help="Index directory to write."),
    kind: str = typer.Option("flat", help="flat (exact) | hnsw | ivf (approximate; their recall@10 is reported)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing index directory."),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
):
    """Build a FAISS index (cosine similarity) over an embeddings directory, for 'transferlab search'."""
    _setup_logging(quiet)
    from transferlab.unsupervised import write_index

    built = write_index(embeddings, out, kind=kind, overwrite=overwrite)
    recall = f", recall@10 against exact search {built['recall@10']:.3f}" if "recall@10" in built else ""
    typer.echo(f"{kind} index of {built['count']} vectors ({built['dim']} dimensions) built in "
               f"{built['build_seconds']:.2f} s{recall} -> {out}")


@app.command()
@_user_errors
def search(
    index: Path = typer.Argument(..., help="An index directory written by 'transferlab index'."),
    queries: list[Path] = typer.Argument(..., help="Image or audio files and/or folders of them, or one text table."),
    k: int = typer.Option(10, "--k", help="Neighbours per query."),
    output_format: str = typer.Option("csv", "--format", help="csv | json."),
    text_column: Optional[str] = typer.Option(None, help="Text column of a text table (default: text, else sentence)."),
    skip_bad_files: bool = typer.Option(False, "--skip-bad-files", help="Skip unreadable files with a warning."),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
):
    """The nearest neighbours of each query in an index, embedded with the index's own backbone."""
    _setup_logging(quiet or output_format == "json")
    from transferlab.data import examples_from_paths
    from transferlab.data.text_tables import TextColumns
    from transferlab.unsupervised import SearchIndex, search_examples

    if output_format not in ("csv", "json"):
        raise TransferlabError(f"--format must be 'csv' or 'json', got {output_format!r}")
    opened = SearchIndex(index)  # a bad index is reported before the queries are read
    data = examples_from_paths(queries, skip_bad_files=skip_bad_files, columns=TextColumns(text_column))
    found = search_examples(opened, data, k=k, progress=not quiet)
    names = data.texts if hasattr(data, "texts") else [str(path) for path in data.paths]
    rows = [{"query": name, "rank": rank, "item": hit.item, "score": round(hit.score, 6), "label": hit.label}
            for name, hits in zip(names, found, strict=True) for rank, hit in enumerate(hits, 1)]
    if output_format == "json":
        typer.echo(json.dumps(rows, indent=2))
        return
    writer = csv.writer(sys.stdout)
    writer.writerow(["query", "rank", "item", "score", "label"])
    writer.writerows([row["query"], row["rank"], row["item"], f"{row['score']:.4f}", row["label"] or ""]
                     for row in rows)


@app.command()
@_user_errors
def cluster(
    embeddings: Path = typer.Argument(..., help="An embeddings directory written by 'transferlab embed'."),
    k: Optional[int] = typer.Option(None, "--k", help="Number of clusters (default: the best silhouette over "
                                    "2..20; hdbscan chooses its own)."),
    method: str = typer.Option("kmeans", help="kmeans | agglomerative | hdbscan."),
    out: Optional[Path] = typer.Option(None, help="Write the assignments here: CSV item,cluster[,label]."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out file."),
    seed: int = typer.Option(0, help="Random seed (k-means, silhouette sample)."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as one JSON object."),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
):
    """Cluster embeddings by cosine similarity; NMI and ARI against their labels when they have some."""
    _setup_logging(quiet or as_json)
    from transferlab.unsupervised.evaluation import cluster_embeddings, clustering_lines

    summary = cluster_embeddings(embeddings, k=k, method=method, seed=seed, out=out, overwrite=overwrite).summary
    typer.echo(json.dumps(summary) if as_json else "\n".join(clustering_lines(summary)))


@app.command()
@_user_errors
def rank(
    data: str = typer.Argument(..., help="Labeled target data spec (its train split when it has several)."),
    backbones: str = typer.Option(..., help="Comma-separated candidate backbones, e.g. "
                                  "efficientnet_lite0,efficientnet_lite1,lenet."),
    metric: str = typer.Option("logme", help="Sort by: logme | leep | nce | hscore | knn (leep and nce need "
                               "backbones with a source classifier, e.g. efficientnet_lite0)."),
    per_class: Optional[int] = typer.Option(None, help="Score at most this many examples per class."),
    knn_k: int = typer.Option(5, help="Neighbours voting in the k-NN leave-one-out accuracy."),
    image_size: Optional[int] = typer.Option(None, help="Input size of image backbones (default: their own)."),
    precision: str = typer.Option("auto", help="auto | fp32 | bf16, for embedding."),
    text_column: Optional[str] = typer.Option(None, help="Text column of text data (default: text, else sentence)."),
    label_column: str = typer.Option("label", help="Label column of text data."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON list of rows, best first."),
    skip_bad_files: bool = typer.Option(False, "--skip-bad-files", help="Skip unreadable files with a warning."),
    seed: int = typer.Option(0, help="Random seed of the --per-class draw and of randomly initialised backbones."),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
):
    """Score pretrained backbones on your labeled data before training (LogME, LEEP, NCE, H-score, k-NN).

    Every score is higher-is-better; rows are sorted by --metric. A single backbone is scored too, with a warning:
    LogME, LEEP, NCE and H-score only mean something next to another backbone's.
    """
    _setup_logging(quiet or as_json)
    from transferlab.data.text_tables import TextColumns
    from transferlab.unsupervised.ranking import METRICS, rank_backbones

    rows = rank_backbones(data, backbones.split(","), metric, per_class=per_class, knn_k=knn_k,
                          image_size=image_size, precision=precision, columns=TextColumns(text_column, label_column),
                          skip_bad_files=skip_bad_files, seed=seed, progress=not (quiet or as_json))
    if as_json:
        typer.echo(json.dumps([row.to_dict() for row in rows], indent=2))
        return
    header = ["rank", "backbone", *METRICS, "seconds"]
    cells = [[str(row.rank), row.backbone, *(_score_cell(row.scores.get(m)) for m in METRICS), f"{row.seconds:.1f}"]
             for row in rows]
    widths = [max(len(line[i]) for line in [header, *cells]) for i in range(len(header))]
    for line in [header, *cells]:
        typer.echo("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())
    typer.echo(f"sorted by {metric}, higher is better; '-': the backbone has no source classifier")


def _score_cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _compare(**given):
    """Did transfer pay off on your data? Runs methods x backbones x label budgets x seeds as ordinary run
    directories, skips the cells already done (rerun after a crash, or with more seeds, to continue), and writes
    leaderboard.csv.

    Every 'fit' setting is a flag here too and goes to the compared methods that take it.
    """
    config_file, quiet = given.pop("config"), given.pop("quiet")
    _setup_logging(quiet)
    from transferlab.compare import Grid, parse_budgets, run_compare
    from transferlab.config import load_config_file, parse_list

    backbones = given.pop("backbones")
    grid = Grid(methods=parse_list(given.pop("methods")),
                backbones=parse_list(backbones) if backbones else [None],
                labels_per_class=parse_budgets(given.pop("budgets")), seeds=list(range(given.pop("seeds"))))
    out, overwrite = given.pop("out"), given.pop("overwrite")
    settings = {**(load_config_file(config_file) if config_file else {}),
                **{key: value for key, value in given.items() if value is not None}}
    result = run_compare(grid, settings, out, overwrite=overwrite, progress=not quiet)
    lines = [f"compare directory: {result.out} ({len(result.outcomes)} cells, {result.seconds:.0f} s); "
             f"leaderboard.csv and report.html there"]
    for row in result.leaderboard:
        scores = "  ".join(f"{name} {stat.text()}" for name, stat in row.metrics.items())
        budget = "all labels" if row.labels_per_class is None else f"{row.labels_per_class}/class"
        seconds = f"  train {row.train_seconds.text(1)} s" if row.train_seconds else ""
        lines.append(f"{row.name:<36} {budget:>11}  {row.seeds} seeds  {scores}{seconds}")
    lines += [f"note: {note}" for note in result.notes]
    typer.echo("\n".join(lines))


def _compare_options() -> tuple[inspect.Parameter, ...]:
    def option(name, annotation, default):
        return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=default)

    return (
        option("methods", str, typer.Option(..., help="Comma-separated methods, e.g. scratch,features,finetune.")),
        option("backbones", Optional[str], typer.Option(None, help="Comma-separated backbones (default: the "
                                                        "default backbone of the data's modality).")),
        option("budgets", str, typer.Option("all", "--labels-per-class", help="Comma-separated labels per class, "
                                            "'all' for every label, e.g. 5,10,all.")),
        option("seeds", int, typer.Option(3, min=1, help="Seeds per cell (0, 1, ... N-1): mean and std over them.")),
        option("out", Path, typer.Option(..., help="Compare directory: one run directory per cell under cells/.")),
        option("overwrite", bool, typer.Option(False, "--overwrite", help="Replace what --out holds.")),
    )


app.command("compare")(_user_errors(with_settings_as_options(
    _compare, exclude=("method", "backbone", "labels_per_class", "seed", "out", "overwrite", "resume"),
    extra=_compare_options())))


@app.command()
@_user_errors
def report(
    runs: list[Path] = typer.Argument(..., help="Run directories, compare directories, or folders searched for run "
                                      "directories."),
    out: Path = typer.Option(..., help="HTML file to write (self-contained: opens offline)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out file."),
    embedding_maps: int = typer.Option(2, help="Adaptation experiments given a t-SNE map of source and target "
                                       "embeddings before and after training (0: none)."),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
):
    """One HTML report of finished runs: leaderboard over seeds, verdicts on less data / better / faster against
    the from-scratch baseline, plots. A path holding no run is named and the others go on."""
    _setup_logging(quiet)
    from transferlab.reporting import write_report

    written = write_report(runs, out, overwrite=overwrite, embedding_maps=embedding_maps)
    for note in written.runs.notes:
        typer.echo(f"note: {note}", err=True)
    typer.echo(f"report of {len(written.runs.runs)} runs ({len(written.rows)} experiments, {len(written.plots)} "
               f"plots) -> {out}")
    for verdict in written.verdicts:
        typer.echo(f"{verdict.claim}: {verdict.answer} - {verdict.summary}")


def _other_rank() -> bool:
    """A torchrun process other than rank 0: it reports warnings and errors only, so the output is said once."""
    return int(os.environ.get("RANK", "0")) > 0


def main() -> None:
    if _other_rank():
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (for the whole process)
    app()


if __name__ == "__main__":
    main()
