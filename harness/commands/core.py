"""`harness init | run | loop | status | log | best`: parse options, call the modules, print."""

from __future__ import annotations

import functools
import sys

import click

from harness import listing
from harness.agents.registry import AGENTS, make_agent
from harness.commands.common import handle_errors, repo_option, view
from harness.config import DIRECTIONS, READERS
from harness.executors import EXECUTORS, Resources
from harness.loop import StopRules, run_current, run_loop
from harness.session import init as init_research
from harness.session import open_lab


def _budget(_ctx, _param, value):
    if value is not None and value <= 0:
        raise click.BadParameter(f"must be positive, got {value:g}")
    return value


budget_option = click.option("--budget", type=float, default=None, envvar="HARNESS_BUDGET", callback=_budget,
                             help="Training seconds per run (default: the target's budget, 300).")
quiet_option = click.option("--quiet", "-q", is_flag=True, envvar="HARNESS_QUIET",
                            help="Plain one-line-per-event output, no live view.")

_TARGET_OPTIONS = (
    click.option("--editable", multiple=True, envvar="HARNESS_EDITABLE",
                 help="A file the agent may edit (repeatable; default train.py)."),
    click.option("--run-command", envvar="HARNESS_RUN_COMMAND",
                 help="The shell command of one run (default: the budgeted `python train.py`)."),
    click.option("--metric", envvar="HARNESS_METRIC", help="The metric's name (default val_bpb)."),
    click.option("--reader", type=click.Choice(READERS), envvar="HARNESS_READER",
                 help="How the metric is read from a run (default summary: a `metric: value` line)."),
    click.option("--pattern", envvar="HARNESS_PATTERN",
                 help="The regex (reader regex) or file.json:key.path (reader json)."),
    click.option("--direction", type=click.Choice(DIRECTIONS), envvar="HARNESS_DIRECTION",
                 help="min: lower is better (default); max: higher is better."),
    click.option("--immutable", multiple=True, envvar="HARNESS_IMMUTABLE",
                 help="A file that must never change, e.g. the evaluation (repeatable)."),
)


def target_options(fn):
    """The target options (see docs/targets.md), passed on as one `target` dict of overrides;
    what is not given stays None, so the config file and the recorded target decide."""

    @functools.wraps(fn)
    def wrapper(*args, editable, run_command, metric, reader, pattern, direction, immutable, **kwargs):
        target = {"editable": editable or None, "run_command": run_command, "metric": metric, "reader": reader,
                  "pattern": pattern, "direction": direction, "immutable": immutable or None}
        return fn(*args, target=target, **kwargs)

    for option in reversed(_TARGET_OPTIONS):
        wrapper = option(wrapper)
    return wrapper


@click.command()
@click.option("--tag", envvar="HARNESS_TAG", help="Names the branch autoresearch/<tag> (default: today's date).")
@click.option("--baseline-runs", type=int, default=None, envvar="HARNESS_BASELINE_RUNS",
              help="Runs of the unmodified code to measure noise (default 2).")
@target_options
@budget_option
@quiet_option
@repo_option
@handle_errors
def init(tag, baseline_runs, budget, quiet, repo, target):
    """Start a research branch here and measure the baseline and its noise."""
    with view(quiet) as reporter:
        lab = open_lab(repo, {**target, "budget": budget}, reporter, initialized=False)
        row = init_research(lab, tag, baseline_runs)
    noise, t = lab.noise(), lab.cfg.target
    click.echo(f"research branch {lab.repo.branch()}: baseline {t.metric} {row.value:.6f} ({t.better_word}) "
               f"over {len(row.runs)} runs; {noise.describe()}")
    click.echo("next: `harness loop` (or `cat program.md | claude -p` with `harness run`)")


@click.command()
@click.option("-m", "--message", "description", help="The hypothesis (commit message) of this attempt.")
@target_options
@budget_option
@quiet_option
@repo_option
@handle_errors
def run(description, budget, quiet, repo, target):
    """Run one experiment on the current editable file(s): commit, run, analyze, decide, record."""
    with view(quiet) as reporter:
        lab = open_lab(repo, {**target, "budget": budget}, reporter)
        with lab.lock:
            lab.capture_manifest()
            row = run_current(lab, description)
    if row.status in ("crash", "invalid", "violation"):
        click.echo(f"see {lab.archive / row.commit / 'run.log'}" if row.commit != "-" else row.failure)


@click.command()
@click.option("--agent", type=click.Choice(AGENTS), default=None, envvar="HARNESS_AGENT",
              help="Who proposes edits (default: offline, or the config's agent).")
@click.option("--agent-command", envvar="HARNESS_AGENT_COMMAND", help="The program for --agent command.")
@click.option("--model", envvar="HARNESS_MODEL", help="Proposal model for LLM agents.")
@click.option("--summary-model", envvar="HARNESS_SUMMARY_MODEL", help="Cheaper model for notes and summaries.")
@click.option("--max-experiments", type=int, envvar="HARNESS_MAX_EXPERIMENTS", help="Stop after N experiments.")
@click.option("--hours", type=float, envvar="HARNESS_HOURS", help="Stop after H hours.")
@click.option("--until", type=float, envvar="HARNESS_UNTIL", help="Stop once the best reaches this value.")
@click.option("--patience", type=int, envvar="HARNESS_PATIENCE", help="Stop after N experiments without a keep.")
@click.option("--max-cost", type=float, envvar="HARNESS_MAX_COST", help="Stop before spending more USD on models.")
@click.option("--max-tokens", type=int, envvar="HARNESS_MAX_TOKENS", help="Stop before using more model tokens.")
@click.option("--agent-timeout", type=float, envvar="HARNESS_AGENT_TIMEOUT", help="Seconds per agent call.")
@click.option("--max-turns", type=click.IntRange(min=1), envvar="HARNESS_MAX_TURNS",
              help="Model turns per experiment for claude / anthropic (default 30).")
@click.option("--confirm/--no-confirm", default=None, envvar="HARNESS_CONFIRM",
              help="Re-run a winner with a second seed before keeping it (default on).")
@click.option("--workers", type=click.IntRange(min=1), default=None, envvar="HARNESS_WORKERS",
              help="Experiments in flight at once, each in its own worktree (default 1).")
@click.option("--executor", type=click.Choice(EXECUTORS), default=None, envvar="HARNESS_EXECUTOR",
              help="Where runs execute: this machine (local) or a Ray cluster (ray). See docs/scaling.md.")
@click.option("--ray-address", envvar="HARNESS_RAY_ADDRESS",
              help="The Ray cluster (host:port, ray://host:10001 or auto; default: RAY_ADDRESS or a local one).")
@click.option("--gpus-per-worker", type=float, default=None, envvar="HARNESS_GPUS_PER_WORKER",
              help="GPUs each run gets (default: 1 if GPUs are present, else 0 = CPU threads).")
@click.option("--threads-per-worker", type=click.IntRange(min=1), default=None, envvar="HARNESS_THREADS_PER_WORKER",
              help="CPU threads each run gets (default: the cores // workers).")
@target_options
@budget_option
@quiet_option
@repo_option
@handle_errors
def loop(agent, agent_command, model, summary_model, max_experiments, hours, until, patience, max_cost, max_tokens,
         agent_timeout, max_turns, confirm, workers, executor, ray_address, gpus_per_worker, threads_per_worker, budget, quiet,
         repo, target):
    """Run the research loop: propose, commit, train, analyze, decide, record; until a stop."""
    if agent is None and agent_command:
        agent = "command"
    overrides = {**target, "agent": agent, "agent_command": agent_command, "model": model, "summary_model": summary_model,
                 "max_cost": max_cost, "max_tokens": max_tokens, "agent_timeout": agent_timeout, "max_turns": max_turns,
                 "confirm": confirm, "budget": budget, "workers": workers, "executor": executor,
                 "ray_address": ray_address, "gpus_per_worker": gpus_per_worker, "threads_per_worker": threads_per_worker}
    rules = StopRules(max_experiments, hours, until, patience)
    with view(quiet) as reporter:  # it prints the stop line (reason, experiments, kept, best)
        lab = open_lab(repo, overrides, reporter)
        backend = make_agent(lab.cfg.agent, lab.archive)
        with lab.lock:
            lab.capture_manifest()
            run_loop(lab, backend, rules, resources=Resources(lab.cfg.gpus_per_worker, lab.cfg.threads_per_worker))


@click.command()
@repo_option
@handle_errors
def status(repo):
    """Best, noise floor, counts, last results, and what is running."""
    lab = open_lab(repo)
    click.echo(listing.status_text(lab))


@click.command(name="log")
@click.option("-n", "--limit", type=int, default=None, help="Only the last N attempts.")
@repo_option
@handle_errors
def log_(limit, repo):
    """One line per attempt: number, commit, status, value, delta vs best, description."""
    lab = open_lab(repo)
    click.echo(listing.log_text(lab, limit))


@click.command()
@click.option("--show", is_flag=True, help="Print the best editable file(s) too.")
@repo_option
@handle_errors
def best(show, repo):
    """The all-time best commit and its value."""
    lab = open_lab(repo)
    row = lab.best()
    click.echo(listing.best_line(row, lab.cfg.target))
    if show:
        for name in lab.cfg.target.editable:
            sys.stdout.write(lab.repo.show(row.commit, name) or "")


commands = [init, run, loop, status, log_, best]
