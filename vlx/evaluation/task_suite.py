"""Multi-task closed-loop evaluation: `vlx eval ... rollout.env=metaworld rollout.tasks=mt10` (or a list of names).

Each task of `rollout.tasks` (names or groups, `vlx.envs.metaworld_tasks.resolve_tasks`) is rolled out on the same
`rollout.episodes` seeds with `rollout.env_kwargs` plus its `task`: the policy, the policy told another task's
instruction (the wrong-instruction control, `rollout.wrong_instruction`: does it follow the words or only the
scene?) and Meta-World's scripted expert (skipped with `rollout.expert=false`); with `rollout.policy=expert`
the expert alone. `rollout.blind_instruction` is not used here: the wrong-instruction control takes its place.
Prints one line per task and per split (`success_rate[split=easy]=`) and the overall rates, writes
`{output_dir}/rollout.json` (per task, per split, every episode), GIFs of each task's first `rollout.videos`
episodes under `{output_dir}/videos/{task}/`, and with `logger=wandb` a W&B table (task, split, success,
episodes, and the controls' success).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vlx.envs.metaworld_env import ENV_NAME
from vlx.envs.metaworld_tasks import INSTRUCTIONS, SPLITS, resolve_tasks, split_of, wrong_instruction
from vlx.envs.rollout import EnvPolicy, ObservationPolicy, RolloutResult, rollout
from vlx.errors import ConfigError
from vlx.evaluation.closed_loop import _plain, episode_seeds, log_to_wandb, scripted_expert
from vlx.execution import ExecutionSettings

RUNS = {"policy": "success_rate", "expert": "expert_success_rate",
        "wrong_instruction": "wrong_instruction_success_rate"}  # run name -> the rate's name in the report


def task_runs(policy: ObservationPolicy | EnvPolicy, settings: dict[str, Any], task: str, tasks: list[str],
              execution: ExecutionSettings | None, video_dir: Path) -> dict[str, RolloutResult]:
    """The rollouts of one task: the policy, then (unless the policy is the expert) its controls."""
    seeds = episode_seeds(settings)
    common = {"env_kwargs": {**(settings.get("env_kwargs") or {}), "task": task},
              "batch_size": int(settings["batch_size"])}
    runs = {"policy": rollout(policy, ENV_NAME, seeds, num_videos=int(settings["videos"]), video_dir=video_dir,
                              execution=execution, **common)}
    if isinstance(policy, EnvPolicy):  # the expert alone
        return runs
    if settings.get("wrong_instruction", True):
        runs["wrong_instruction"] = rollout(policy, ENV_NAME, seeds, execution=execution,
                                            instruction_override=wrong_instruction(task, tasks), **common)
    expert = scripted_expert(settings)
    if expert is not None:
        runs["expert"] = rollout(expert, ENV_NAME, seeds, **common)
    return runs


def rates(runs: dict[str, list[RolloutResult]]) -> dict[str, Any]:
    """Each run's success rate over all its episodes (of one task, one split or every task), and the count."""
    out: dict[str, Any] = {}
    for run, results in runs.items():
        episodes = [e for result in results for e in result.episodes]
        out[RUNS[run]] = sum(e.success for e in episodes) / len(episodes)
    out["episodes"] = sum(len(result.episodes) for result in runs["policy"])
    return out


def evaluate_tasks(cfg: dict[str, Any], settings: dict[str, Any], policy: ObservationPolicy | EnvPolicy,
                   execution: ExecutionSettings | None) -> dict[str, Any]:
    """Evaluate `policy` on every task of `rollout.tasks`; print, save and log per task and per split."""
    if settings["env"] != ENV_NAME:
        raise ConfigError(f"rollout.tasks names Meta-World tasks; it needs rollout.env={ENV_NAME} (got "
                          f"rollout.env={settings['env']!r}); for other environments leave rollout.tasks unset")
    if "task" in (settings.get("env_kwargs") or {}):
        raise ConfigError("rollout.env_kwargs.task and rollout.tasks are both set; name the tasks in rollout.tasks")
    tasks = resolve_tasks(settings["tasks"], "rollout.tasks")
    output_dir = Path(cfg["output_dir"])
    results: dict[str, dict[str, RolloutResult]] = {}
    report: dict[str, Any] = {"policy": "expert" if isinstance(policy, EnvPolicy) else "model", "tasks": {}}
    for task in tasks:
        results[task] = task_runs(policy, settings, task, tasks, execution, output_dir / "videos" / task)
        entry = {"split": split_of(task), "instruction": INSTRUCTIONS[task],
                 **rates({run: [result] for run, result in results[task].items()})}
        if "wrong_instruction" in results[task]:
            entry["wrong_instruction"] = wrong_instruction(task, tasks)
        report["tasks"][task] = entry
        print(" ".join(f"{key}[{task}]={entry[key]:.3f}" for key in RUNS.values() if key in entry))
    report["splits"] = {}
    for split, members in SPLITS.items():
        chosen = [task for task in tasks if task in members]
        if chosen:
            runs = {run: [results[task][run] for task in chosen] for run in results[chosen[0]]}
            report["splits"][split] = {"tasks": len(chosen), **rates(runs)}
            print(f"success_rate[split={split}]={report['splits'][split]['success_rate']:.3f} tasks={len(chosen)}")
    overall = rates({run: [results[task][run] for task in tasks] for run in results[tasks[0]]})
    report.update(overall)
    for key in RUNS.values():
        if key in overall:
            print(f"{key}={overall[key]:.3f}")
    print(f"episodes_per_task={int(settings['episodes'])}")
    report["settings"] = {**settings, "tasks": tasks}
    report["episodes"] = {task: {run: [vars(e) for e in r.episodes] for run, r in runs.items()}
                          for task, runs in results.items()}
    videos = [video for task in tasks for video in results[task]["policy"].videos]
    report["videos"] = [str(video) for video in videos]
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "rollout.json").write_text(json.dumps(report, indent=1, default=_plain))
    print(f"rollout={output_dir / 'rollout.json'}")
    columns, rows = suite_table(report)
    splits = {f"rollout/{split}/{key}": value for split, entry in report["splits"].items()
              for key, value in entry.items() if key in RUNS.values()}
    log_to_wandb(cfg, report, videos, splits, {"tasks": (columns, rows)})
    return report


def suite_table(report: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    """The W&B table of a report: one row per task (task, split, success, episodes, then the controls' rates)."""
    controls = [key for key in ("expert_success_rate", "wrong_instruction_success_rate") if key in report]
    columns = ["task", "split", "success", "episodes", *(key.removesuffix("_rate") for key in controls)]
    rows = [[task, entry["split"], entry["success_rate"], entry["episodes"], *(entry[key] for key in controls)]
            for task, entry in report["tasks"].items()]
    return columns, rows
