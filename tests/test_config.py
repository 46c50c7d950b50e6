"""The target as configuration: defaults, harness.toml, the CLI options and their env vars, the
target `harness init` records, and the run-command check at init. Through the real CLI
(CliRunner) on real temporary git repositories."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from support.research import git

from harness import config as config_module
from harness.cli import cli
from harness.config import DEFAULT_IMMUTABLE, Target, load_config
from harness.errors import ConfigError
from harness.runcheck import check_command

ROOT = Path(__file__).resolve().parents[1]

SCORE = """\
import os
X = 3.0  # the best score is at X = 5
print(f"score: {10 - (X - 5) ** 2:.6f}")
"""


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HARNESS_", "ALR_"))}
    return {**env, **extra}


def make_repo(path: Path, files: dict[str, str]) -> Path:
    path.mkdir(parents=True)
    for name, text in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)
    (path / ".gitignore").write_text("__pycache__/\n")
    git(path, "init", "-q", "-b", "main")
    git(path, "config", "user.name", "Test User")
    git(path, "config", "user.email", "test@example.com")
    git(path, "add", "-A")
    git(path, "commit", "-qm", "start")
    return path


def invoke(repo: Path, *args: str, code: int | None = 0, **env: str):
    result = CliRunner().invoke(cli, [*args, "--repo", str(repo)], env=clean_env(**env), catch_exceptions=False)
    if code is not None:
        assert result.exit_code == code, result.output
    return result


# --- defaults ----------------------------------------------------------------------------------


def test_only_the_default_target_has_the_default_immutable_files(tmp_path: Path):
    assert Target().immutable == DEFAULT_IMMUTABLE == ("prepare.py", "analyze.py")
    assert Target(run_command="python bench.py").immutable == ()
    assert Target(run_command="python bench.py", immutable=("bench.py",)).immutable == ("bench.py",)
    (tmp_path / "harness.toml").write_text('run_command = "python score.py"\nmetric = "score"\n')
    assert load_config(tmp_path).target.immutable == ()


def test_a_minimal_harness_toml_target_inits_without_an_immutable_list(tmp_path: Path):
    repo = make_repo(tmp_path / "repo", {
        "score.py": SCORE,
        "harness.toml": 'editable = ["score.py"]\nrun_command = "python score.py"\nmetric = "score"\n'
                        'direction = "max"\n',
    })
    out = invoke(repo, "init", "--tag", "t", "-q").output
    assert "baseline score 6.000000 (higher is better)" in out


# --- the CLI options, their env vars, and the recorded target -----------------------------------


def test_target_options_at_init_are_recorded_and_later_commands_need_no_repeating(tmp_path: Path):
    repo = make_repo(tmp_path / "repo", {"score.py": SCORE})
    invoke(repo, "init", "--tag", "t", "-q", "--editable", "score.py", "--run-command", "python score.py",
           "--metric", "score", "--direction", "max", "--immutable", ".gitignore")
    meta = json.loads((repo / ".auto-log-research" / "meta.json").read_text())
    assert meta["target"] == {"editable": ["score.py"], "run_command": "python score.py", "metric": "score",
                              "direction": "max", "reader": "summary", "pattern": None, "immutable": [".gitignore"]}
    cfg = load_config(repo)  # no file, no options: the recorded target
    assert (cfg.target.metric, cfg.target.direction, cfg.target.editable) == ("score", "max", ("score.py",))
    log = invoke(repo, "log").output
    assert log.splitlines()[0].startswith("score: higher is better")
    assert "baseline    score 6.000000" in log


@pytest.mark.parametrize("args, env, what", [
    (["--metric", "loss"], {}, "metric 'score', but the config now says 'loss'"),
    ([], {"HARNESS_DIRECTION": "min"}, "direction 'max', but the config now says 'min'"),
    (["--run-command", "python other.py"], {}, "run_command 'python score.py', but the config now says 'python other.py'"),
    ([], {"HARNESS_IMMUTABLE": "score2.py"}, "immutable none, but the config now says [score2.py]"),
    (["--reader", "regex", "--pattern", "score: (.*)"], {}, "reader 'summary', but the config now says 'regex'"),
])
def test_a_later_command_that_measures_differently_is_refused_in_one_line(tmp_path: Path, args, env, what):
    repo = make_repo(tmp_path / "repo", {"score.py": SCORE, "score2.py": SCORE})
    invoke(repo, "init", "--tag", "t", "-q", "--editable", "score.py", "--run-command", "python score.py",
           "--metric", "score", "--direction", "max")
    result = invoke(repo, "loop", "-q", "--max-experiments", "1", *args, code=2, **env)
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and what in lines[0], result.output
    assert "harness init --tag <new>" in lines[0]
    assert len(ledger_rows(repo)) == 1  # nothing ran


def ledger_rows(repo: Path) -> list[str]:
    return (repo / ".auto-log-research" / "results.tsv").read_text().splitlines()[1:]


def test_a_config_file_changed_after_init_is_refused_but_editable_may_change(tmp_path: Path):
    toml = 'editable = ["score.py"]\nrun_command = "python score.py"\nmetric = "score"\ndirection = "max"\n'
    repo = make_repo(tmp_path / "repo", {"score.py": SCORE, "harness.toml": toml})
    invoke(repo, "init", "--tag", "t", "-q")
    (repo / "harness.toml").write_text(toml.replace('"max"', '"min"'))
    out = invoke(repo, "status", code=2).output
    assert out.startswith("error: this research was started with direction 'max'") and out.count("\n") == 1
    (repo / "harness.toml").write_text(toml.replace('["score.py"]', '["score.py", "helper.py"]'))
    assert "score (higher is better)" in invoke(repo, "status").output


def test_env_vars_feed_the_same_options(tmp_path: Path):
    repo = make_repo(tmp_path / "repo", {"score.py": SCORE, "b.py": "B = 1\n"})
    out = invoke(repo, "init", "--tag", "t", "-q", HARNESS_EDITABLE="score.py b.py",
                 HARNESS_RUN_COMMAND="python score.py", HARNESS_METRIC="score", HARNESS_DIRECTION="max").output
    assert "baseline score 6.000000 (higher is better)" in out
    assert load_config(repo).target.editable == ("score.py", "b.py")


def test_bad_option_values_are_usage_errors(tmp_path: Path):
    repo = make_repo(tmp_path / "repo", {"score.py": SCORE})
    result = invoke(repo, "init", "--direction", "sideways", code=2)
    assert "'sideways' is not one of 'min', 'max'" in result.output
    result = invoke(repo, "init", "--reader", "xml", code=2)
    assert "'xml' is not one of" in result.output


def test_every_setting_is_documented_and_unknown_ones_get_a_suggestion(tmp_path: Path):
    docs = (ROOT / "docs" / "targets.md").read_text()
    missing = [key for key in config_module._KEYS if f"| `{key}` |" not in docs]
    assert not missing, f"docs/targets.md lacks {missing}"
    (tmp_path / "harness.toml").write_text('metrik = "score"\n')
    with pytest.raises(ConfigError, match=r"unknown setting 'metrik' in .*harness.toml: did you mean 'metric'\?"):
        load_config(tmp_path)


# --- the run-command check at init ---------------------------------------------------------------


@pytest.fixture
def cmd_dir(tmp_path: Path) -> Path:
    (tmp_path / "bench.py").write_text("print('seconds: 1')\n")
    (tmp_path / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (tmp_path / "run.sh").chmod(0o755)
    (tmp_path / "plain.sh").write_text("echo hi\n")
    return tmp_path


def run_path() -> str:
    return os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])


@pytest.mark.parametrize("command", [
    "python bench.py",
    "FOO=1 BAR=2 python bench.py > out.txt 2>&1",
    "python -u -X dev bench.py --n 3",
    "python -m pytest -q && python bench.py",
    "./run.sh; echo done",
    "sh plain.sh | tee log.txt",
    "env FOO=1 python bench.py",
    "cd sub && python whatever.py",  # after a cd, relative paths are not checked
    "python -c 'print(1)'",
    "$RUNNER bench.py",  # a program from a variable: no verdict
    "for i in 1 2; do nosuchtool; done",  # control flow: no verdict
    "python $(echo bench.py)",
])
def test_run_commands_that_pass_the_check(cmd_dir: Path, command: str):
    assert check_command(command, cmd_dir, run_path()) is None


@pytest.mark.parametrize("command, problem", [
    ("no-such-tool --x", "the run command's program 'no-such-tool' was not found on the PATH runs get"),
    ("FOO=1 no-such-tool", "program 'no-such-tool' was not found"),
    ("python bench.py && no-such-tool", "program 'no-such-tool' was not found"),
    ("python missing.py", "missing.py (run by the run command) does not exist in "),
    ("FOO=1 python -u missing.py", "missing.py (run by the run command) does not exist"),
    ("python -m no_such_module_xyz", "the run command's module 'no_such_module_xyz' is not importable"),
    ("./missing.sh", "the run command's program ./missing.sh was not found in "),
    ("./plain.sh", "./plain.sh is not executable: `chmod +x ./plain.sh` or run it with sh"),
    ("python 'bench.py", "cannot be read by the shell: No closing quotation"),
])
def test_run_commands_that_fail_the_check(cmd_dir: Path, command: str, problem: str):
    got = check_command(command, cmd_dir, run_path())
    assert got is not None and problem in got, got


def test_the_check_uses_the_path_runs_get(cmd_dir: Path):
    """`python -m pytest` is found through the harness's own interpreter's folder (its venv),
    as in a run, even when the caller's PATH has no python at all."""
    assert check_command("python -m pytest -q", cmd_dir, str(Path(sys.executable).parent)) is None
    assert "was not found" in check_command("python -m pytest -q", cmd_dir, "/nonexistent")


def test_a_missing_script_in_the_run_command_fails_init_in_one_line(tmp_path: Path):
    repo = make_repo(tmp_path / "repo", {"score.py": SCORE})
    result = invoke(repo, "init", "-q", "--editable", "score.py", "--run-command", "FOO=1 python scroe.py",
                    "--metric", "score", code=2)
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and re.match(r"error: scroe\.py \(run by the run command\) does not exist in .*: "
                                        r"fix `run_command` in the config$", lines[0]), result.output
    assert git(repo, "branch", "--show-current") == "main"  # nothing was started


# --- what the agents are told ----------------------------------------------------------------------

GPT_WORDS = ("GPT", "ML researcher", "train.py", "prepare.py", "analyze.py", "val_bpb", "MATRIX_LR", "training",
             "lower is better", "seed")


def prompt_for(root: Path) -> str:
    from harness.context import build_context

    cfg = load_config(root)
    return build_context(cfg, root, 3, [], margin=0.01).prompt


def test_the_default_targets_prompt_is_about_the_gpt(tmp_path: Path):
    prompt = prompt_for(tmp_path)
    assert "You are an autonomous ML researcher" in prompt
    assert "- Metric: `val_bpb` (lower is better)." in prompt
    assert "Each run trains for a fixed 300 s of wall clock" in prompt
    assert "- Never edit `prepare.py`, `analyze.py`: they are the fixed measurement." in prompt
    assert "and it is then confirmed with a second seed." in prompt
    assert "do not run the training yourself" in prompt and "Raise MATRIX_LR 0.04 -> 0.06" in prompt


def test_another_targets_prompt_has_its_own_words_and_direction(tmp_path: Path):
    (tmp_path / "harness.toml").write_text(
        'editable = ["solver.toml"]\nimmutable = ["bench.py"]\nrun_command = "python bench.py"\n'
        'metric = "throughput"\ndirection = "max"\nbudget = 45\ngrace_s = 15\nconfirm = false\n')
    prompt = prompt_for(tmp_path)
    for word in GPT_WORDS:
        assert word not in prompt, word
    assert "You are an autonomous researcher" in prompt
    assert "Make `throughput` higher (higher is better) by editing solver.toml; it is measured by `python bench.py`." in prompt
    assert "- Edit only: solver.toml" in prompt and "- Metric: `throughput` (higher is better)." in prompt
    assert "- Each run (`python bench.py`) gets 45 s (plus 15 s of grace)" in prompt
    assert "- Never edit `bench.py`: it is the fixed measurement." in prompt
    assert "by more than 0.0100 (the noise margin).\n" in prompt  # no confirmation run: not promised
    assert "do not run `python bench.py` yourself" in prompt


def test_the_system_prompt_and_notes_templates_name_no_target():
    from harness.agents.base import system_guidance

    prompts = ROOT / "harness" / "prompts"
    for text in (system_guidance(), (prompts / "ideas_template.md").read_text(),
                 (prompts / "insights_template.md").read_text()):
        for word in GPT_WORDS:
            assert word not in text, word


def test_the_agents_target_info_carries_the_fixed_files_and_budget(tmp_path: Path):
    from harness.context import target_info

    (tmp_path / "harness.toml").write_text('run_command = "python bench.py"\nmetric = "s"\nimmutable = ["bench.py"]\n'
                                           "budget = 12\n")
    info = target_info(load_config(tmp_path))
    assert (info.immutable, info.budget, info.direction) == (("bench.py",), 12.0, "min")
