"""Every sentence the monitor says: pure functions from facts to text (the recorder says them).

Example:
    >>> count(1, "run"), count(3, "run")
    ('1 run', '3 runs')
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from lightning_xai.functional.batching import BatchSizeTuner
from lightning_xai.monitor.budget import RunBudget
from lightning_xai.monitor.sizing import Sizing
from lightning_xai.shortcuts import Finding

__all__ = [
    "analysis_refused",
    "cost_summary",
    "count",
    "disk_failure",
    "display_scaled",
    "empty_regions",
    "explained_layer",
    "fast_dev_run",
    "few_test_images",
    "first_run",
    "fit_end_failed",
    "fragile_methods",
    "handover_failed",
    "history_notice",
    "images_failed",
    "incomplete_maps",
    "insensitive_methods",
    "logging_failed",
    "methods_failed",
    "mixed_sizes",
    "near_timeout",
    "no_probes",
    "no_tensorboard",
    "no_validation",
    "nonfinite_probes",
    "on_shortcut_failed",
    "overhead_skip",
    "probes_not_restored",
    "run_failed",
    "schedule_summary",
    "settled",
    "shortcut_found",
    "shortcuts_off",
    "sizing",
    "stopping",
    "tests_on_probes",
    "time_budget",
    "tuned",
    "unreadable_run",
    "unreadable_training",
    "unreadable_validation",
    "unsettled",
]

PREFIX = "AttributionMonitor"


def count(number: int, noun: str) -> str:
    """``"1 run"``, ``"2 runs"``."""
    return f"{number} {noun}{'' if number == 1 else 's'}"


def first_run(
    probes: int, phases: Mapping[str, float], method_seconds: Mapping[str, float], folder: Path | None
) -> str:
    """After the first run: the whole run's time by part, and where things are."""
    total = sum(phases.values())
    per_method = ", ".join(f"{key} {seconds:.2f}s" for key, seconds in method_seconds.items())
    parts = [f"maps {phases.get('maps', 0.0):.2f}s ({per_method})"]
    parts += [f"{name} {phases[name]:.2f}s" for name in ("shortcuts", "faithfulness", "recording") if name in phases]
    where = f"; raw maps and summary.json under {folder}" if folder is not None else ""
    return f"{PREFIX}: first run explained {probes} probes in {total:.2f}s: {', '.join(parts)}{where}."


def tuned(tuners: Mapping[bool, BatchSizeTuner]) -> str:
    """Once every tuner has settled: the batch size of each pass type."""
    shown = ", ".join(
        f"{'forward+backward' if backward else 'forward'} {tuner.best}" for backward, tuner in sorted(tuners.items())
    )
    device = next(iter(tuners.values())).device
    return (
        f"{PREFIX}: tuned the batch sizes on {device} while explaining: {shown} images per pass (the fastest "
        "of the sizes tried); methods given a batch_size keep theirs."
    )


def time_budget(
    max_seconds: float | None, step: int, done: Sequence[str], seconds: float, skipped: Sequence[str]
) -> str:
    """The first time ``max_seconds`` makes a run skip methods."""
    return (
        f"{PREFIX} exceeded its time budget (max_seconds={max_seconds}) at step {step}: "
        f"{', '.join(done)} took {seconds:.1f}s, so {', '.join(skipped)} did not run or stopped between two batches. "
        "Skipped and cut methods are listed in summary.json for every run; raise `max_seconds`, use fewer probes or "
        "cheaper settings. This warning is shown once."
    )


def cost_summary(budget: RunBudget) -> str:
    """One sentence for the log: runs, seconds, overhead, skipped and failed runs."""
    skipped = f"; {count(budget.skipped, 'run')} skipped to respect max_overhead" if budget.skipped else ""
    failed = f"; {count(budget.failed, 'run')} failed (see summary.json)" if budget.failed else ""
    return (
        f"{count(budget.runs, 'run')} took {budget.seconds:.1f}s, {budget.overhead():.0%} on top of the rest of the fit "
        f"({budget.training_seconds():.1f}s){skipped}{failed}"
    )


def overhead_skip(budget: RunBudget, *, epoch: int, step: int) -> str:
    """The first time ``max_overhead`` makes the monitor skip a run."""
    return (
        f"{PREFIX} skipped its run at epoch {epoch} (step {step}) to keep its cost within "
        f"max_overhead={budget.max_overhead}: {cost_summary(budget)}, and another run would take about {budget.last_run:.1f}s. "
        "It explains again once training has caught up; raise `max_overhead`, use fewer probes or cheaper "
        "settings to explain more often. This warning is shown once."
    )


def run_failed(*, epoch: int, step: int, error: str) -> str:
    """A run failed as a whole: training goes on."""
    return (
        f"{PREFIX}: its run at epoch {epoch} (step {step}) failed and was skipped; training goes on. Cause: {error}. "
        "The failure is recorded with its error among the runs in summary.json and the next run is tried again; pass "
        "`strict=True` to raise such errors instead (for tests and CI). This warning is shown once per cause."
    )


def methods_failed(failures: Mapping[str, str], *, step: int) -> str:
    """Some methods or analyses failed in a run: the rest was recorded."""
    shown = "; ".join(f"{name}: {error}" for name, error in failures.items())
    return (
        f"{PREFIX}: at step {step} these parts of its run failed and were left out (training goes on): {shown}. "
        "They are listed under 'failures' in that run's summary.json entry; pass `strict=True` to raise instead. "
        "This warning is shown once per cause."
    )


def nonfinite_probes(indices: Sequence[int], *, step: int) -> str:
    """Probes whose scores were NaN or infinite were left out of a run."""
    return (
        f"{PREFIX}: at step {step} the model's scores for probes {list(indices)} were not finite (NaN or inf); those "
        "probes were left out of this run's maps (zeros in the raw maps, listed under 'skipped_probes' in "
        "summary.json) and the other probes were explained. This warning is shown once."
    )


def empty_regions(indices: Sequence[int], *, step: int) -> str:
    """Segmentation probes whose target class the model predicts on no pixel were left out of a run."""
    return (
        f"{PREFIX}: at step {step} the model predicts the target class of probes {list(indices)} on no pixel, so "
        "there is nothing to explain there: those probes were left out of this run's maps and stability (zeros in "
        "the raw maps, listed under 'empty_regions' in summary.json). This warning is shown once."
    )


def disk_failure(path: object, error: BaseException, *, logging: bool = True) -> str:
    """A write under the history folder failed; logging goes on when a logger takes the monitor's output."""
    goes_on = "goes on logging to its loggers" if logging else "has no logger to go on with, so it records nothing more"
    return (
        f"{PREFIX} could not write {path} ({type(error).__name__}: {error}); it stops writing files under that "
        f"folder for this fit and {goes_on} (training is not affected). Free disk space or "
        "fix the permissions to keep the on-disk history."
    )


def logging_failed(error: BaseException) -> str:
    """The logger failed outside a run (recording a failure, the cost scalar)."""
    return (
        f"{PREFIX} could not log to TensorBoard ({type(error).__name__}: {error}); training is not affected and "
        "summary.json keeps the record. Check the logger's folder. This warning is shown once."
    )


def images_failed(error: BaseException) -> str:
    """Drawing or logging a run's images failed on the background thread."""
    return (
        f"{PREFIX} could not draw or log a run's images ({type(error).__name__}: {error}); training is not "
        "affected and the run's scalars, maps and summary.json are kept. This warning is shown once."
    )


def no_tensorboard(folder: Path) -> str:
    """Without a TensorBoard logger: where the images go."""
    return (
        f"{PREFIX}: no TensorBoardLogger among the trainer's loggers; attribution images are saved "
        f"as PNG files under {folder / 'images'} and metrics in {folder / 'summary.json'}."
    )


def fast_dev_run() -> str:
    """``fast_dev_run`` switches the monitor off."""
    return f"{PREFIX} is off for this fast_dev_run (Lightning suppresses logging and checkpoints in it): nothing is explained or written."


def no_validation(stage: str, reason: str) -> str:
    """Without validation the monitor stays idle."""
    return (
        f"{PREFIX} stays idle for stage {stage!r}: it picks its probes from validation data and explains at the end "
        f"of validation, but {reason}. Give the Trainer validation data, or pass `probes=` and run `trainer.validate()`."
    )


def unreadable_training(error: BaseException) -> str:
    """The training batches' images cannot be read: expected gradients falls back to blurred baselines."""
    return (
        f"{_cannot_read('a training batch', error)} Until it can, expected gradients takes the training images "
        "gathered so far as its references, or blurred probes without any."
    )


def unreadable_validation(error: BaseException) -> str:
    """The validation batches' images cannot be read once training has started: nothing to choose probes from."""
    return (
        f"{_cannot_read('the validation batches', error)} It explains nothing until it can, or until `probes=` "
        "are given."
    )


def _cannot_read(batches: str, error: BaseException) -> str:
    """The lead of every sentence about batches whose images cannot be read (the reader's error, with its advice)."""
    return f"{PREFIX} cannot read the images of {batches} ({error})"


def tests_on_probes(error: BaseException) -> str:
    """Probes were given and the validation batches cannot be read: the shortcut checks test on the probes."""
    return f"{_cannot_read('the validation batches', error)} The shortcut checks test on the given probes instead."


def mixed_sizes(size: tuple[int, ...], other: int) -> str:
    """Validation images of several sizes: the probes and test images are those of the first size seen."""
    shape = "x".join(map(str, size))
    return (
        f"{PREFIX}: the validation images come in several sizes; probes and shortcut test images are the images of "
        f"the first size seen ({shape}), {other} images of other sizes were left out. Pass `probes=` to choose them."
    )


def few_test_images(count: int, needed: int) -> str:
    """Too few validation images for the shortcut checks' interventions."""
    return (
        f"{PREFIX}: shortcut checks are off: they test on validation images and saw {count}, fewer than {needed}. "
        "Give the Trainer more validation images (`limit_val_batches`) to check for shortcuts."
    )


def display_scaled(error: BaseException) -> str:
    """``display_mean``/``display_std`` do not fit the images: they are drawn min-max scaled instead."""
    return f"{PREFIX}: {error} The images are drawn min-max scaled, each on its own."


def on_shortcut_failed(error: BaseException) -> str:
    """The user's ``on_shortcut`` raised: the finding is recorded and ``stop_on_shortcut`` still stops."""
    return (
        f"{PREFIX}: `on_shortcut` raised {type(error).__name__}: {error}. The finding is recorded as usual "
        "(and `stop_on_shortcut` still stops the fit)."
    )


def no_probes(error: str) -> str:
    """Why no probes could be chosen (a run without them explains nothing)."""
    return error if error.startswith(PREFIX) else f"{PREFIX}: {error}"


def settled(key: str, *, epoch: int, step: int, threshold: float, patience: int) -> str:
    """A method's maps have settled."""
    return (
        f"{PREFIX}: {key} maps settled at epoch {epoch} (step {step}): rank correlation with the "
        f"previous run >= {threshold} for {patience} runs."
    )


def probes_not_restored(folder: Path) -> str:
    """On resume, the checkpoint's probes were nowhere to be found: new ones are picked."""
    return (
        f"{PREFIX}: the probes the checkpoint was explaining were not found (no matching probes.pt in {folder} or "
        "beside it): new probes are picked from validation data, so maps after the resume are of other images than "
        "before it and are not comparable with them. Resume with the log directory the checkpoint was written with, "
        "or pass the original probes."
    )


def near_timeout(seconds: float, timeout: float, *, step: int, world_size: int) -> str:
    """A run on rank 0 took half the process group's timeout or more while the other ranks waited."""
    return (
        f"{PREFIX}: its run at step {step} took {seconds:.0f}s on rank 0 while the other {count(world_size - 1, 'rank')} "
        f"waited: {seconds / timeout:.0%} of the process group's timeout ({timeout:.0f}s). A run longer than the timeout "
        f"ends the fit on every rank: pass `max_seconds=` (e.g. {timeout / 4:.0f}), use fewer probes or cheaper methods, "
        "or raise the strategy's `timeout`. This warning is shown once."
    )


def unsettled(keys: Sequence[str], *, threshold: float, patience: int) -> str:
    """At the end of fit: methods whose maps never settled."""
    return (
        f"{PREFIX}: the {', '.join(keys)} maps had not settled by the end of training (rank "
        f"correlation with the previous run below {threshold} within the last "
        f"{patience} runs): the explanations were still changing. See the "
        "xai_stability/* curves in TensorBoard."
    )


def analysis_refused(reason: str) -> str:
    """An analysis that cannot serve the model's task (raised at set-up)."""
    return f"{PREFIX}: {reason}"


def shortcuts_off(reason: str) -> str:
    """The shortcut checks are switched off for a task they cannot serve."""
    return f"{PREFIX}: shortcut checks are off for this model ({reason})"


def sizing(chosen: Sizing) -> str:
    """Once, when the images are larger than 64 x 64: the defaults chosen for their size, and a run's passes.

    Example:
        >>> from lightning_xai import Occlusion
        >>> from lightning_xai.monitor.sizing import choose_sizing
        >>> print(sizing(choose_sizing((3, 512, 512), {"occlusion": Occlusion()}, num_probes=None)))
        AttributionMonitor: the probes are 3x512x512, so the default work is sized to them: 3 probes, occlusion window 128x128 with stride 64x64 (7x7 placements); maps stored at 128x128 in runs/; about 153 forward and 0 forward+backward passes per run. Settings you pass (num_probes=, Occlusion(window=), ExpectedGradients(n_samples=)) are kept; see "sizing" in summary.json.
    """
    channels, height, width = chosen.image_size
    parts = [count(chosen.num_probes, "probe")] if chosen.probes_auto else []
    for key, settings in chosen.methods.items():
        if "window" in settings:
            (wh, ww), (sh, sw), (rows, cols) = settings["window"], settings["stride"], settings["placements"]
            parts.append(f"{key} window {wh}x{ww} with stride {sh}x{sw} ({rows}x{cols} placements)")
        if "n_samples" in settings:
            parts.append(f"{key} {count(settings['n_samples'], 'sample')} per probe")
    stored = f"; maps stored at {chosen.stored_size[0]}x{chosen.stored_size[1]} in runs/"
    if chosen.stored_size == (height, width):
        stored = ""
    total = chosen.total
    unknown = [key for key, passes in chosen.passes.items() if passes is None]
    besides = f" (besides {', '.join(unknown)})" if unknown else ""
    return (
        f"{PREFIX}: the probes are {channels}x{height}x{width}, so the default work is sized to them: "
        f"{', '.join(parts) or 'nothing left to choose'}{stored}; about {total.forward} forward and "
        f"{total.forward_backward} forward+backward passes per run{besides}. Settings you pass (num_probes=, "
        'Occlusion(window=), ExpectedGradients(n_samples=)) are kept; see "sizing" in summary.json.'
    )


def explained_layer(key: str, layer: str) -> str:
    """Which layer a layer method explains (said once)."""
    return f"{PREFIX}: {key} explains the layer {layer!r} (pass `layer=` to choose another)."


def fit_end_failed(error: str) -> str:
    """The end-of-fit work (summary, sanity or robustness checks) failed."""
    return f"{PREFIX}: its end-of-fit work failed ({error}); training has finished normally."


def handover_failed(error: str, summary: object) -> str:
    """Under ``ddp_spawn``, rank 0 could not hand its results to the main process."""
    return (
        f"{PREFIX} could not hand its results to the main process ({error}): "
        f"`monitor.history` and `monitor.findings` stay empty there; read {summary} instead."
    )


def unreadable_run(file: object, error: object) -> str:
    """An earlier run's maps could not be read on resume."""
    return f"{PREFIX}: could not read the earlier run {file} ({error}); it is left out of the filmstrips."


def history_notice(notice: str) -> str:
    """What opening the history decided (another folder, a resume, a damaged summary kept aside)."""
    return f"{PREFIX}: {notice}"


def schedule_summary(left_out: int, checks: int = 0) -> str:
    """At the end of fit: what the adaptive schedule saved (method runs, and runs of the shortcut checks)."""
    with_checks = f" and the shortcut checks of {count(checks, 'run')} that ran only the sentinel" if checks else ""
    return (
        f"{PREFIX}: the adaptive schedule left out {count(left_out, 'method run')} of settled methods{with_checks} "
        "(listed per run under 'scheduled_out' in summary.json); schedule='every_run' runs every method every time."
    )


def shortcut_found(message: str) -> str:
    """A new confirmed shortcut finding."""
    return f"{PREFIX} found a likely shortcut: {message}"


def outlined_again(finding: Finding) -> str:
    """A moving region found earlier, outlined again by a later run's confirmation (``ShortcutReport.outlined_again``)."""
    read = (
        f" (in {sum(finding.boxes_read)} of {len(finding.boxes)} probes filling the box lowers the predicted class)"
        if finding.boxes_read
        else ""
    )
    return (
        f"{PREFIX}: the {finding.kind.replace('_', ' ')} found after epoch {finding.epoch} was confirmed again after "
        f"epoch {finding.outlined_after}; its probes are outlined as that model reads them{read}. monitor.findings "
        "and summary.json hold the new outlines."
    )


def stopping() -> str:
    """``stop_on_shortcut`` stops the fit."""
    return f"{PREFIX}: stopping training after a confirmed shortcut (stop_on_shortcut=True)."


def incomplete_maps(key: str, relative: float) -> str:
    """A path method's maps miss much of the score difference they explain."""
    return (
        f"{PREFIX}: the {key} maps are incomplete: their sum misses the score difference they "
        f"explain by {relative:.0%} of the target score on average (completeness gap). Use more steps or "
        "samples (n_steps / n_samples). This warning is shown once per method."
    )


def insensitive_methods(keys: Sequence[str], threshold: float) -> str:
    """The sanity check found methods whose maps ignore the model's weights."""
    return (
        f"{PREFIX} sanity check: the {', '.join(keys)} maps barely change when the model's weights "
        f"are randomized (rank correlation with the trained model's maps above {threshold}): they do not explain "
        "this model (Adebayo et al., 'Sanity Checks for Saliency Maps')."
    )


def fragile_methods(failures: Mapping[str, Sequence[str]], threshold: float) -> str:
    """The robustness checks found methods whose maps are not robust."""
    shown = "; ".join(f"{key}: {', '.join(checks)}" for key, checks in failures.items())
    return (
        f"{PREFIX} robustness check: these methods' maps are not robust (rank correlation below {threshold}): {shown}. "
        "input_invariance: the maps change under an input shift the model compensates exactly (Kindermans et al.); "
        "fragility: a small perturbation that keeps the prediction moves the maps (Ghorbani et al.). "
        "Compare them with other methods before trusting them."
    )
