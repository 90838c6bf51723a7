"""The `search:` section of a sweep file: an Optuna study whose trials are ordinary run directories.

Each worker process asks the study for a trial, turns its sampled values into `--set` overrides,
validates them as `train` does (an impossible sample is a failed trial with its located reason),
and trains `SWEEP/trial-NNNN` in a `python -m builder train` subprocess. The pruner sees the
trial's validation metric once per epoch: whenever the child prints, the run's events.jsonl says
which epochs are done and metrics.csv (both written before the trainer's epoch line) gives their
values, so a trial's reported values are exactly its run's; a pruned trial is stopped with SIGINT
and keeps its checkpoint (never at its last epoch: then it is complete). The study lives in Optuna
storage: a SQLite file in the sweep directory by default, or any database URL shared by workers
on several machines (docs/sweeps.md).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from builder.lang.errors import BuilderError, SpecError
from builder.tools.leaderboard import higher_is_better
from builder.tools.search_config import CategoricalParam, FloatParam, IntParam, SearchConfig
from builder.tools.sweep_plan import Override, Plan, Variant, new_record, train_namespace
from builder.tools.sweep_run import Children, Outcome, child_env, finish, forwarding_signals, train_command
from training.cli import load_training
from training.runfiles import LOG, METRICS, EpochEvent, read_events, read_metrics, write_record

if TYPE_CHECKING:
    import optuna

Log = Callable[[str], None]


def storage_url(plan: Plan, search: SearchConfig, storage: str | None) -> str:
    """--storage, else the sweep file's storage, else sqlite:///<sweep dir>/study.db (absolute)."""
    return storage or search.storage or f"sqlite:///{(plan.out / 'study.db').resolve()}"


def open_study(plan: Plan, search: SearchConfig, url: str,
               direction: Literal["maximize", "minimize"] = "maximize") -> optuna.Study:
    """Create the study or join it (another worker may be creating it at the same moment)."""
    import optuna
    from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # SQLite: wait for another worker's write lock instead of failing at once.
    kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None
    sampler, pruner = _sampler(search), _pruner(search)
    for attempt in range(5):
        try:
            storage = optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
            return optuna.create_study(storage=storage, study_name=search.study or plan.name, direction=direction,
                                       sampler=sampler, pruner=pruner, load_if_exists=True)
        except (OperationalError, IntegrityError) as exc:  # a lock, or tables another worker is creating
            if attempt == 4:
                raise BuilderError(f"cannot open the study storage {url}: {str(exc).splitlines()[0]}") from None
            time.sleep(0.5 * (attempt + 1))
        except (SQLAlchemyError, ImportError, ValueError) as exc:  # a bad URL, a missing database driver
            raise BuilderError(f"cannot open the study storage {url}: {str(exc).splitlines()[0]}") from None
    raise AssertionError("unreachable")


def _sampler(search: SearchConfig) -> optuna.samplers.BaseSampler:
    import optuna

    if search.sampler == "random":
        return optuna.samplers.RandomSampler(seed=search.sampler_seed)
    return optuna.samplers.TPESampler(seed=search.sampler_seed)


def _pruner(search: SearchConfig) -> optuna.pruners.BasePruner:
    import optuna

    if search.pruner.kind == "none":
        return optuna.pruners.NopPruner()
    # Steps are 1-based epochs; Optuna spares the steps below n_warmup_steps.
    return optuna.pruners.MedianPruner(n_startup_trials=search.pruner.startup_trials,
                                       n_warmup_steps=search.pruner.warmup_epochs + 1)


def sample(trial: optuna.Trial, search: SearchConfig) -> list[Override]:
    """The trial's values as overrides; categorical choices go through JSON (Optuna stores scalars)."""
    out = []
    for path, p in search.params.items():
        value: Any
        if isinstance(p, IntParam):
            value = trial.suggest_int(path, p.low, p.high, step=p.step, log=p.log)
        elif isinstance(p, FloatParam):
            value = trial.suggest_float(path, p.low, p.high, log=p.log)
        else:
            assert isinstance(p, CategoricalParam)
            value = json.loads(trial.suggest_categorical(path, [json.dumps(c) for c in p.choices]))
        out.append(Override(path, value, f"search.params.{path}"))
    return out


def run_search(plan: Plan, search: SearchConfig, *, storage: str | None, trials: int | None, log: Log) -> int:
    """Run trials until the study holds `trials` of them (counting every worker's); exit like a grid sweep."""
    budget = trials or search.trials
    _, _, config = load_training(train_namespace(plan, _trial_variant(plan, 0, [])))  # the base must validate
    search = search.model_copy(update={"metric": search_metric(search, config)})
    plan.out.mkdir(parents=True, exist_ok=True)
    url = storage_url(plan, search, storage)
    higher = higher_is_better(str(search.metric))
    study = open_study(plan, search, url, "maximize" if higher else "minimize")
    log(f"search {study.study_name} in {url}: up to {budget} trials, {'maximiz' if higher else 'minimiz'}ing "
        f"{search.metric}")
    children, env, outcomes = Children(), child_env(1), []
    with forwarding_signals(children):
        while not children.stopping and len(study.get_trials(deepcopy=False)) < budget:
            trial = study.ask()
            if trial.number >= budget:  # another worker asked for the last one at the same instant
                trial.set_user_attr("skipped", "over the trial budget; never ran")
                study.tell(trial, state=_state("FAIL"))
                break
            outcome = run_trial(plan, search, study, trial, children, env, log)
            outcomes.append(outcome)
            if outcome.status == "interrupted":
                break
    return finish(plan.out, outcomes, children.stopping, log)


def search_metric(search: SearchConfig, config: Any) -> str:
    """search.metric, or the spec's training.monitor; one located error for a metric the task does not log."""
    from training.tasks import task_kind

    metric = search.metric or str(config.monitor)
    kind = task_kind(config.dataset.task)
    known = (*kind.monitorable, *(c.replace("val_", "test_", 1) for c in kind.monitorable))
    if metric not in known:
        from builder.lang.errors import suggest

        raise SearchMetricError(f"search.metric: unknown metric '{metric}': the {kind.name} task logs "
                                f"{', '.join(known)}{suggest(metric, known)}")
    return metric


class SearchMetricError(BuilderError):
    """A search metric the spec's task does not log (one line, exit 2)."""


def _trial_variant(plan: Plan, number: int, overrides: list[Override]) -> Variant:
    name = f"trial-{number:04d}"
    return Variant(name, name, plan.specs[0], tuple(overrides), None, "search")


def run_trial(
    plan: Plan, search: SearchConfig, study: optuna.Study, trial: optuna.Trial, children: Children,
    env: dict[str, str], log: Log,
) -> Outcome:
    """Sample, validate and train one trial; tell the study how it ended."""
    v = _trial_variant(plan, trial.number, sample(trial, search))
    run_dir = plan.out / v.name
    run_dir.mkdir(parents=True, exist_ok=True)
    record = new_record(plan, v, trial=trial.number)
    ns = train_namespace(plan, v)
    try:
        load_training(ns)
    except SpecError as exc:  # a sample the spec cannot take (a shape that collapses...): a failed trial
        return _ended(study, trial, run_dir, record, Outcome("failed", 2, exc.lines()[0]), None, log)
    record["command"] = train_command(ns, run_dir, resume=False)[1:]
    write_record(run_dir, record)
    log(f"{v.name}: training {' '.join(record['overrides'])}")
    watcher = EpochWatcher(run_dir, str(search.metric), trial, children)
    outcome = children.run(train_command(ns, run_dir, resume=False), run_dir / LOG, env, watcher.on_line)
    if watcher.pruned and outcome.status == "interrupted":
        outcome = Outcome("pruned", outcome.code, f"pruned after epoch {watcher.last_epoch}")
    return _ended(study, trial, run_dir, record, outcome, watcher.best, log)


class EpochWatcher:
    """Reports each epoch's metric to the trial; asks the pruner; stops the child when it says so."""

    def __init__(self, run_dir: Path, metric: str, trial: optuna.Trial, children: Children) -> None:
        self.run_dir, self.metric, self.trial, self.children = run_dir, metric, trial, children
        self.best: float | None = None
        self.last_epoch = 0
        self.pruned = False

    def on_line(self, line: str) -> None:
        """The child printed: report the epochs events.jsonl says are done since the last report."""
        if self.pruned:
            return
        done = [e for e in read_events(self.run_dir) if isinstance(e, EpochEvent) and e.epoch > self.last_epoch]
        if done:
            self.report(done[-1])

    def report(self, event: EpochEvent) -> None:
        value, epoch = epoch_metric(self.run_dir / METRICS, self.metric)
        self.last_epoch = epoch
        if value is None:  # an epoch without evaluation (eval_every > 1)
            return
        better = max if higher_is_better(self.metric) else min
        self.best = value if self.best is None else better(self.best, value)
        self.trial.report(value, epoch)
        last = event.epoch == event.epochs  # nothing left to save: the trial completes
        if not last and self.trial.should_prune():
            self.pruned = True
            self.children.interrupt()  # this worker's one child: it checkpoints and exits


def epoch_metric(path: Path, metric: str) -> tuple[float | None, int]:
    """The last epoch's `metric` (val_NAME, falling back to test_NAME without a val split) and its number."""
    rows = read_metrics(path)
    if not rows:
        return None, 0
    last = rows[-1]
    column = metric if metric in last else metric.replace("val_", "test_", 1)
    return last.get(column), last["epoch"]


def _state(name: str) -> Any:
    import optuna

    return getattr(optuna.trial.TrialState, name)


def _ended(
    study: optuna.Study, trial: optuna.Trial, run_dir: Path, record: dict[str, Any], outcome: Outcome,
    best: float | None, log: Log,
) -> Outcome:
    if outcome.status == "done" and best is not None:
        study.tell(trial, best)
    else:
        study.tell(trial, state=_state("PRUNED" if outcome.status == "pruned" else "FAIL"))
    record.update(status=outcome.status, exit_code=outcome.code, reason=outcome.reason, value=best)
    write_record(run_dir, record)
    log(f"{run_dir.name}: {outcome.status}" + (f" ({best:.4f})" if best is not None else "")
        + (f": {outcome.reason}" if outcome.reason else ""))
    return outcome
