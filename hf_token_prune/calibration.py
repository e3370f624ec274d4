"""Calibration to an accuracy budget: the cheapest token-reduction setting whose metric stays within ``max_loss``
points of the unreduced model on a labelled validation split, found without training, then checked on a held-out
split so that the budget is not fitted to the validation clips' noise.

    from hf_token_prune.analysis import load_analysis_splits, load_pruned_model
    from hf_token_prune.calibration import calibrate, save_calibrated

    model, extractor = load_pruned_model("outputs/demo")
    validation, test = load_analysis_splits(model, extractor, "audiofolder",
                                            {"validation": "validation", "held-out": "test"}, data_dir="data/keywords")
    result = calibrate(model, validation, test, max_loss=1.0)
    save_calibrated(model, extractor, result, "outputs/demo-calibrated")

The settings searched all run the model's own weights, method, token score and pruning layers:

* the reference: keep rate 1.0, nothing reduced;
* fixed keep rates, the paper's policy and the baseline: every clip keeps ``ceil(n * keep_rate)`` tokens per layer;
* keep masses (``keep_mass``, adaptive): each clip keeps the fewest best-scored tokens holding that share of its
  score mass, between an optional floor (``min_keep_rate``) and ceiling (``keep_rate``).

Both policies are costed alike: the mean over clips of each clip's own multiply-accumulates
(:func:`hf_token_prune.macs.clip_macs` of its kept counts), so a rate and a threshold compare on one axis.

The search is a coarse grid per policy, then ``refine_rounds`` rounds that each put ``refine_points`` settings evenly
between a policy's cheapest setting within budget and its next cheaper measured neighbour (0 below the grid), where
the budget is crossed; every round narrows that gap ``refine_points + 1`` times. The metric of a split of a few
hundred clips moves in steps of one clip and is not monotone in the setting, so a bisection, which trusts one
comparison per step, could follow noise into a wrong interval; the grid keeps the whole range measured, the
refinement spends the remaining passes where the choice is made, and the number of passes over the data is fixed.
Each round is one pass: every setting of the round runs on each batch as it is loaded, so the audio is decoded once
per round, not once per setting.
"""

import json
import math
from dataclasses import asdict, dataclass, replace
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .analysis.evaluation import classification_metric
from .analysis.inputs import model_settings
from .analysis.report import markdown_table, pyplot, save_figure
from .files import written_whole
from .macs import clip_macs
from .selection import kept_counts_per_clip


DEFAULT_KEEP_RATES = (0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3)
DEFAULT_KEEP_MASSES = (0.99, 0.95, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4)
DEFAULT_REFINE_ROUNDS = 2
DEFAULT_REFINE_POINTS = 3
REFERENCE, FIXED, ADAPTIVE = "reference", "fixed", "adaptive"
# A loss equal to the budget meets it; percentages of a split's clips carry float error in the last bits.
_BUDGET_TOLERANCE = 1e-9
# Refined parameters are rounded so that tables, labels and saved configs stay readable.
_PARAMETER_DECIMALS = 4


@dataclass(frozen=True)
class Setting:
    """One point of the search: the reduction settings of the config it runs with (``REDUCTION_SETTINGS``)."""

    keep_rate: float = 1.0
    keep_mass: float | None = None
    min_keep_rate: float | None = None

    @property
    def policy(self) -> str:
        if self.keep_mass is not None:
            return ADAPTIVE
        return FIXED if self.keep_rate < 1.0 else REFERENCE

    @property
    def parameter(self) -> float:
        """What the search varies within the policy: the keep mass, else the keep rate."""
        return self.keep_rate if self.keep_mass is None else self.keep_mass

    def with_parameter(self, value: float) -> "Setting":
        return replace(self, **{"keep_rate" if self.keep_mass is None else "keep_mass": value})

    @property
    def label(self) -> str:
        if self.keep_mass is None:
            return f"keep_rate={self.keep_rate:g}"
        bounds = [f"keep_rate={self.keep_rate:g}"] if self.keep_rate < 1.0 else []
        bounds += [f"min_keep_rate={self.min_keep_rate:g}"] if self.min_keep_rate is not None else []
        return f"keep_mass={self.keep_mass:g}" + (f" ({', '.join(bounds)})" if bounds else "")

    def as_config(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Measurement:
    """A setting's metric (points: percent top-1, or mAP x 100) and mean MACs per clip on one split."""

    metric: float
    mean_macs: float


def evaluate_settings(model, data, settings, desc=None, seed=0) -> dict:
    """:class:`Measurement` of every setting on ``data`` (``AnalysisData``): each batch is loaded once and run once
    per setting, each clip's MACs counted from its own kept counts (:func:`hf_token_prune.macs.clip_macs`).

    ``seed`` fixes the draws of the ``"random"`` token score.
    """
    logits = {setting: [] for setting in settings}
    macs = {setting: [] for setting in settings}
    labels = []
    drop_padding = model.config.drop_padding
    torch.manual_seed(seed)
    with model_settings(model):
        for batch in data.batches(desc=desc):
            labels.append(batch["labels"])
            # only a drop_padding model takes the extractor's frame mask; the others run the padded window
            frame_mask = batch.get("attention_mask") if drop_padding else None
            real_patches = None
            if frame_mask is not None:
                real_patches = model.patch_layout.real_patches(frame_mask.bool()).sum(dim=1)
            for setting in settings:
                with model.reduction_settings(**setting.as_config()):
                    outputs = model(batch["input_values"], attention_mask=frame_mask, output_kept_patches=True)
                    if outputs.kept_patches is None:
                        raise ValueError(
                            f"token_reduction={model.config.token_reduction!r} reports no kept patches, so its cost "
                            "per clip cannot be counted: calibrate a model that prunes or fuses."
                        )
                    counts = kept_counts_per_clip(outputs.kept_patches)
                    macs[setting].append(clip_macs(model, counts, real_patches))
                logits[setting].append(outputs.logits.float())
    labels = torch.cat(labels)
    return {
        setting: Measurement(
            100 * classification_metric(torch.cat(logits[setting]), labels, data.multi_label),
            torch.cat(macs[setting]).double().mean().item(),
        )
        for setting in settings
    }


def pareto_front(costs, metrics) -> list[bool]:
    """Whether each point is on the Pareto front: no other point costs no more and scores no less, one strictly."""
    points = list(zip(costs, metrics))
    return [
        not any(c <= cost and m >= metric and (c, m) != (cost, metric) for c, m in points)
        for cost, metric in points
    ]


def _refinements(measured, policy, threshold, points):
    """Settings between ``policy``'s cheapest setting within budget and its next cheaper neighbour. Both parameters
    range over (0, 1]: the reference's 1.0 stands for the passing end when none of the policy passes, and 0 for the
    cheaper end when the grid's cheapest setting passes, so the search leaves a grid that was too coarse or too high."""
    members = sorted((s for s in measured if s.policy == policy), key=lambda s: s.parameter)
    if not members:
        return []
    passing = [s for s in members if measured[s].metric >= threshold - _BUDGET_TOLERANCE]
    high = min(passing, key=lambda s: measured[s].mean_macs).parameter if passing else 1.0
    below = [s.parameter for s in members if s.parameter < high]
    values = np.linspace(below[-1] if below else 0.0, high, points + 2)[1:-1]
    rounded = [round(float(value), _PARAMETER_DECIMALS) for value in values]
    refined = [members[0].with_parameter(value) for value in rounded if value > 0]
    return [setting for setting in dict.fromkeys(refined) if setting not in measured]


def check_max_loss(max_loss):
    """``max_loss`` if it is a budget: a finite number of points >= 0; else a ``ValueError`` naming the range."""
    is_number = isinstance(max_loss, (int, float)) and not isinstance(max_loss, bool)
    if not is_number or not math.isfinite(max_loss) or max_loss < 0:
        raise ValueError(
            f"max_loss={max_loss!r} is invalid: it is the metric the calibrated model may lose against keep rate 1.0, "
            "in points (1.0 = one point of top-1 accuracy or of mAP); give a number >= 0."
        )
    return max_loss


def _check_labelled(data, name):
    labels = data.dataset.select_columns(["labels"])["labels"]
    # one class per clip (a multi-label model on single-label data too): every clip needs its class
    single = [label for label in labels if not isinstance(label, list)]
    if single:
        unlabelled = any(label is None or label < 0 for label in single)
    else:
        unlabelled = not any(len(row) for row in labels)
    if unlabelled:
        raise ValueError(
            f"the {name} split has clips without a label: calibration measures the metric, so it needs a labelled "
            "split (give another split)."
        )


def _check_calibratable(model, settings):
    if not model.config.pruning_layers:
        raise ValueError(
            f"{type(model).__name__} has no pruning layers (config.pruning_layers is empty): there is nothing to "
            "calibrate; set pruning_layers, e.g. [3, 6, 9], first."
        )
    for setting in settings:  # a refused setting is one line now, before any audio is read
        with model.reduction_settings(**setting.as_config()):
            pass


@dataclass
class CalibrationResult:
    """What :func:`calibrate` measured and chose; ``write`` puts it in a folder (json, markdown, plot)."""

    validation: pd.DataFrame  # one row per setting searched
    held_out: pd.DataFrame | None  # the reference, the chosen setting and its counterpart, on the held-out split
    chosen: Setting
    counterpart: Setting | None  # the other policy's setting nearest in mean MACs: the comparison at equal cost
    max_loss: float
    metric_name: str
    search: dict  # the grids and refinement the search ran with

    @property
    def metric_column(self) -> str:
        return f"{self.metric_name} (%)"

    @property
    def budget(self) -> str:
        return f"{self.max_loss:g} point" + ("" if self.max_loss == 1 else "s")

    @property
    def budget_note(self) -> str:
        note = f"at most {self.budget} of {self.metric_name} below keep rate 1.0 on the validation split"
        if self.metric_name == "accuracy":  # the metric moves in steps of one clip: a budget below one is zero
            clips = self.search["validation_clips"]
            note += f" (one of its {clips} clips is {100 / clips:.2f} points)"
        return note

    def held_out_verdict(self) -> str:
        """One sentence: what the chosen setting (and its counterpart) lose on the held-out split."""
        losses = self.held_out.set_index("setting")["loss (points)"]
        loss = losses[self.chosen.label]
        verdict = "within" if loss <= self.max_loss + _BUDGET_TOLERANCE else "beyond"
        text = f"on the held-out split ({self.search['held_out_clips']} clips) {self.chosen.label} loses {loss:.2f} "
        text += f"points against keep rate 1.0, {verdict} the budget of {self.budget}"
        if self.counterpart is not None:
            text += f"; {self.counterpart.label}, the nearest in mean MACs, loses {losses[self.counterpart.label]:.2f}"
        return text + "."

    def summary(self) -> str:
        """What a command prints: the validation table, the choice, the held-out check."""
        lines = [_shown(self.validation),
                 f"chosen: {self.chosen.label}, the cheapest setting within the budget: {self.budget_note}"]
        if self.held_out is not None:
            lines += ["held-out check:", _shown(self.held_out), self.held_out_verdict()]
        return "\n".join(lines)

    def to_json(self, facts=None) -> dict:
        def rows(frame):
            return None if frame is None else json.loads(frame.to_json(orient="records"))

        return {
            **(facts or {}),
            "metric": self.metric_name,
            "max_loss": self.max_loss,
            "chosen": self.chosen.as_config(),
            "counterpart": None if self.counterpart is None else self.counterpart.as_config(),
            "search": self.search,
            "validation": rows(self.validation),
            "held_out": rows(self.held_out),
            "versions": _versions(),
        }

    def plot(self, path):
        plt = pyplot()
        fig, axis = plt.subplots(figsize=(6.4, 4))
        table = self.validation
        metric = self.metric_column
        styles = {FIXED: ("o", "tab:blue", "fixed keep rate"), ADAPTIVE: ("s", "tab:orange", "keep mass (adaptive)")}
        for policy, (marker, color, name) in styles.items():
            rows = table[table["policy"] == policy].sort_values("MMACs per clip")
            if rows.empty:
                continue
            axis.plot(rows["MMACs per clip"], rows[metric], marker, color=color, alpha=0.45, label=name)
            front = rows[rows["Pareto"]]
            # a step: between two front points the best reachable metric is the cheaper one's
            axis.plot(front["MMACs per clip"], front[metric], "-" + marker, color=color, drawstyle="steps-post",
                      label=f"{name}: Pareto front")
        reference = table[table["policy"] == REFERENCE].iloc[0]
        axis.plot(reference["MMACs per clip"], reference[metric], "k*", markersize=11, label="keep rate 1.0")
        axis.axhline(reference[metric] - self.max_loss, color="gray", linestyle="--",
                     label=f"budget: {self.budget}")
        chosen = table[table["setting"] == self.chosen.label].iloc[0]
        axis.plot(chosen["MMACs per clip"], chosen[metric], "o", markersize=14, markerfacecolor="none",
                  markeredgecolor="red", markeredgewidth=2, label=f"chosen: {self.chosen.label}")
        axis.set_xlabel("mean MMACs per clip (validation)")
        axis.set_ylabel(f"{metric} (validation)")
        axis.legend(fontsize=7)
        return save_figure(fig, path)

    def markdown(self, facts=None) -> str:
        parts = ["# Calibration to an accuracy budget\n"]
        parts += [f"- {name}: {value}" for name, value in (facts or {}).items()]
        parts += [
            f"- budget: {self.budget_note}",
            f"- chosen: `{self.chosen.label}`, the cheapest setting (mean MACs per clip) within the budget",
            "",
            "## Validation: every setting searched\n",
            "`round` 0 is the coarse grid, later rounds refine where the budget is crossed; `Pareto` marks each "
            "policy's Pareto front (no setting of that policy is cheaper and at least as good).\n",
            _shown(self.validation),
        ]
        if self.held_out is not None:
            parts += [
                "## Held-out check\n",
                "The reference, the chosen setting and the other policy's setting nearest in mean MACs, on a split "
                "the search never saw.\n",
                _shown(self.held_out),
                self.held_out_verdict() + "\n",
            ]
        parts += ["![metric vs mean MACs per clip](calibration.png)\n"]
        return "\n".join(parts)

    def write(self, output_dir, facts=None):
        """Write ``calibration.json``, ``calibration.md`` and ``calibration.png`` into ``output_dir``."""
        output_dir = Path(output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "calibration.json").write_text(json.dumps(self.to_json(facts), indent=1) + "\n")
        (output_dir / "calibration.md").write_text(self.markdown(facts))
        self.plot(output_dir / "calibration.png")


def _shown(table) -> str:
    """A table as markdown, the setting's label standing for its three config columns."""
    return markdown_table(table.drop(columns=["keep_rate", "keep_mass", "min_keep_rate"]),
                          digits={"MMACs per clip": 3, "MACs vs reference (%)": 1})


def _versions():
    import transformers

    try:
        package = version("hf-token-prune")
    except PackageNotFoundError:
        package = "not installed"
    return {"hf-token-prune": package, "torch": torch.__version__, "transformers": transformers.__version__}


def _table(measured, metric_column, reference, threshold=None, rounds=None):
    order = (REFERENCE, FIXED, ADAPTIVE)
    settings = sorted(measured, key=lambda s: (order.index(s.policy), measured[s].mean_macs, s.parameter))
    table = pd.DataFrame({
        "policy": [s.policy for s in settings],
        "setting": [s.label for s in settings],
        "keep_rate": [s.keep_rate for s in settings],
        "keep_mass": [s.keep_mass for s in settings],
        "min_keep_rate": [s.min_keep_rate for s in settings],
        metric_column: [measured[s].metric for s in settings],
        "loss (points)": [measured[reference].metric - measured[s].metric for s in settings],
        "MMACs per clip": [measured[s].mean_macs / 1e6 for s in settings],
        "MACs vs reference (%)": [100 * measured[s].mean_macs / measured[reference].mean_macs for s in settings],
    })
    if threshold is not None:
        table["meets budget"] = table[metric_column] >= threshold - _BUDGET_TOLERANCE
        table["Pareto"] = False
        for policy in (FIXED, ADAPTIVE):
            rows = table["policy"] == policy
            table.loc[rows, "Pareto"] = pareto_front(table.loc[rows, "MMACs per clip"], table.loc[rows, metric_column])
        table["round"] = [rounds[s] for s in settings]
    return table


def calibrate(
    model,
    validation,
    held_out=None,
    max_loss=1.0,
    keep_rates=DEFAULT_KEEP_RATES,
    keep_masses=DEFAULT_KEEP_MASSES,
    max_keep_rate=1.0,
    min_keep_rate=None,
    refine_rounds=DEFAULT_REFINE_ROUNDS,
    refine_points=DEFAULT_REFINE_POINTS,
    seed=0,
) -> CalibrationResult:
    """Search the cheapest setting within ``max_loss`` points of keep rate 1.0 on ``validation`` (see the module).

    Args:
        model: a pruned model of this package (its method, token score and pruning layers are kept).
        validation: the labelled ``AnalysisData`` the search is measured on; its metric is top-1 accuracy, or mAP for
            multi-label data (:func:`hf_token_prune.analysis.classification_metric`).
        held_out: a second labelled ``AnalysisData``; the reference, the chosen setting and its counterpart of the
            other policy at the nearest mean MACs are measured on it too.
        max_loss: the budget in points (1.0 = one point of top-1 accuracy or of mAP), >= 0.
        keep_rates: the coarse grid of fixed keep rates (each < 1).
        keep_masses: the coarse grid of keep masses, in (0, 1].
        max_keep_rate: the keep masses' ceiling, as their ``keep_rate`` (1.0: none).
        min_keep_rate: the keep masses' floor (None: one token).
        refine_rounds: refinement rounds after the grid.
        refine_points: settings added per policy per round, between the budget's crossing points.
        seed: seeds the ``"random"`` token score of every pass.

    Raises:
        ValueError: a budget < 0, an unlabelled split, a model without pruning layers, a refused setting, or no
            setting within the budget (naming the best one found and its loss).
    """
    check_max_loss(max_loss)
    reference = Setting()
    grid = [Setting(keep_rate=rate) for rate in keep_rates]
    grid += [Setting(keep_rate=max_keep_rate, keep_mass=mass, min_keep_rate=min_keep_rate) for mass in keep_masses]
    if any(setting.policy == REFERENCE for setting in grid):
        raise ValueError("keep rate 1.0 is the reference, measured anyway: give fixed keep rates below 1.0.")
    _check_calibratable(model, grid)
    for name, data in (("validation", validation), ("held-out", held_out)):
        if data is not None:
            _check_labelled(data, name)

    measured, rounds = {}, {}
    pending = list(dict.fromkeys([reference, *grid]))
    for round_index in range(refine_rounds + 1):
        if not pending:
            break
        desc = f"validation, round {round_index}: {len(pending)} settings"
        measured.update(evaluate_settings(model, validation, pending, desc=desc, seed=seed))
        rounds.update({setting: round_index for setting in pending})
        threshold = measured[reference].metric - max_loss
        pending = [setting for policy in (FIXED, ADAPTIVE)
                   for setting in _refinements(measured, policy, threshold, refine_points)]  # fmt: skip

    metric_column = f"{validation.metric_name} (%)"
    candidates = [setting for setting in measured if setting.policy != REFERENCE]
    within = [s for s in candidates if measured[s].metric >= threshold - _BUDGET_TOLERANCE]
    if not within:
        best = max(candidates, key=lambda s: (measured[s].metric, -measured[s].mean_macs))
        raise ValueError(
            f"no setting keeps {validation.metric_name} within {max_loss:g} points of keep rate 1.0 "
            f"({measured[reference].metric:.2f}) on the validation split: the best, {best.label}, loses "
            f"{measured[reference].metric - measured[best].metric:.2f} points; raise --max_loss or search higher keep "
            "rates / masses."
        )
    # equal cost and metric: the larger parameter, which keeps more of any clip the split did not have
    chosen = min(within, key=lambda s: (measured[s].mean_macs, -measured[s].metric, -s.parameter))
    others = [s for s in candidates if s.policy != chosen.policy]
    counterpart = min(others, key=lambda s: (abs(measured[s].mean_macs - measured[chosen].mean_macs),
                                             measured[s].mean_macs)) if others else None  # fmt: skip
    held_out_table = None
    if held_out is not None:
        checked = [reference, chosen] + ([counterpart] if counterpart is not None else [])
        held_out_table = _table(evaluate_settings(model, held_out, checked, desc="held-out check", seed=seed),
                                metric_column, reference)
    search = dict(keep_rates=list(keep_rates), keep_masses=list(keep_masses), max_keep_rate=max_keep_rate,
                  min_keep_rate=min_keep_rate, refine_rounds=refine_rounds, refine_points=refine_points, seed=seed,
                  validation_clips=len(validation), held_out_clips=None if held_out is None else len(held_out))
    return CalibrationResult(
        validation=_table(measured, metric_column, reference, threshold, rounds),
        held_out=held_out_table,
        chosen=chosen,
        counterpart=counterpart,
        max_loss=max_loss,
        metric_name=validation.metric_name,
        search=search,
    )


def save_calibrated(model, feature_extractor, result, output_dir, overwrite=False, facts=None):
    """Write ``output_dir`` whole (:func:`hf_token_prune.files.written_whole`): the model saved with the chosen
    setting in its config, its feature extractor, and ``result.write``'s calibration files. ``facts`` (name ->
    value: the model, the data, the command) head the json and markdown."""
    with written_whole(output_dir, overwrite) as staging:
        with model.reduction_settings(**result.chosen.as_config()):
            model.save_pretrained(staging)
        feature_extractor.save_pretrained(staging)
        result.write(staging, facts)
    return Path(output_dir)


__all__ = [
    "CalibrationResult",
    "DEFAULT_KEEP_MASSES",
    "DEFAULT_KEEP_RATES",
    "Measurement",
    "Setting",
    "calibrate",
    "check_max_loss",
    "evaluate_settings",
    "pareto_front",
    "save_calibrated",
]
