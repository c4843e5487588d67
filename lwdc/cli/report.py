"""`lwdc report`: the HTML page about a finished run."""
from __future__ import annotations


import click

from .base import fail, main, model_kind


@main.command("report")
@click.argument("run_dir")
@click.option("--out", default=None, type=click.Path(file_okay=False), help="Output folder (default RUN_DIR/report).")
@click.option("--runs", multiple=True, type=click.Path(),
              help="More run folders, or folders holding them, for the trade-off plot (repeatable).")
@click.option("--data", default=None, help="Data set for saliency/similarity (default: the one in config.json).")
@click.option("--samples", default=4, show_default=True, help="Inputs shown in the saliency maps.")
@click.option("--cka-samples", default=500, show_default=True)
@click.option("--probe-train", default=2000, show_default=True, help="Training samples of each linear probe.")
@click.option("--probe-test", default=1000, show_default=True)
@click.option("--smoothgrad-samples", default=25, show_default=True)
@click.option("--seed", default=0, show_default=True)
def report_cmd(run_dir, out, runs, data, samples, cka_samples, probe_train, probe_test, smoothgrad_samples,
               seed) -> None:
    """Write one self-contained HTML page (and its PNGs) about a finished compress run."""
    from ..analysis import ReportError, build_report

    kind = model_kind(run_dir)            # the same errors as export and profile for the same mistakes
    if kind != "run":
        fail(f"lwdc report needs a finished run folder (it compares the run's original and compressed models); "
             f"{run_dir} is {'a registered model' if kind == 'registered' else 'a ' + kind + ' model'}: compress it "
             "first (lwdc compress --model ...), then report on the run folder")
    try:
        path = build_report(run_dir, out, runs, data=data, samples=samples, cka_samples=cka_samples,
                            probe_train=probe_train, probe_test=probe_test,
                            smoothgrad_samples=smoothgrad_samples, seed=seed, log=click.echo)
    except ReportError as exc:
        fail(str(exc))
    click.echo(f"open {path} in a browser (self-contained: images embedded, nothing fetched)")
