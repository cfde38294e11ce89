"""Closed-loop evaluation of a VLA checkpoint (`vlx eval checkpoint=DIR` when the model acts).

Rolls the policy out on `rollout.episodes` seeded episodes of `rollout.env` (the model's cameras and state
read from the environment's observation by name; chunks executed as `rollout.execute_steps` /
`rollout.ensemble` say) and prints `success_rate=`; beside it the same policy with an uninformative
instruction (`blind_success_rate=`, the language-blind control) and the scripted expert
(`expert_success_rate=`) when the environment has one.
With `eval.demos` (a robomimic file) it also prints offline `action_accuracy=` / `action_l1=` on its
held-out split, and `blind_action_accuracy=` with the uninformative instruction. GIFs of the first
episodes go to `{output_dir}/videos`; everything is written to
`{output_dir}/rollout.json` and, with `logger=wandb`, logged to a W&B run (rates and videos).
With `rollout.tasks` (Meta-World) each task is evaluated in turn (`vlx.evaluation.task_suite`); `rollout.policy=expert`
rolls out the environment's scripted expert alone, without a checkpoint (`evaluate_expert`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from vlx.data.robomimic_hdf5 import RobomimicFile
from vlx.envs import ExpertPolicy, MetaWorldExpert, rollout
from vlx.envs.block_reach import ENV_NAME
from vlx.envs.metaworld_env import ENV_NAME as METAWORLD
from vlx.envs.rollout import EnvPolicy, RolloutResult
from vlx.errors import ConfigError
from vlx.evaluation.actions import evaluate_actions
from vlx.execution import ExecutionSettings
from vlx.model import VisionLanguageModel


def observation_inputs(model: VisionLanguageModel, obs: dict[str, Any]) -> tuple[Any, Any]:
    """(image or {camera: image}, state or None) for the model from an environment's observation dict."""
    spec = model.observation
    if spec.cameras:
        missing = [name for name in spec.cameras if name not in obs]
        if missing:
            raise ConfigError(f"rollout: the environment's observation has no camera {missing[0]!r} (it has "
                              f"{sorted(obs)}), but the model was trained with cameras {spec.cameras}")
        images: Any = {name: obs[name] for name in spec.cameras}
    else:
        images = obs["agentview_image"]
    if spec.state_dim is None:
        return images, None
    if not spec.state_keys:
        raise ConfigError("rollout: the model takes a state but its config names no observation.state_keys to build "
                          "it from the environment's observation")
    missing = [key for key in spec.state_keys if key not in obs]
    if missing:
        raise ConfigError(f"rollout: the environment's observation has no state key {missing[0]!r} (it has "
                          f"{sorted(obs)}); observation.state_keys={spec.state_keys}")
    return images, np.concatenate([np.asarray(obs[key], dtype=np.float32).reshape(-1) for key in spec.state_keys])


def model_policy(model: VisionLanguageModel, unnorm_key: str | None):
    """The batched observation policy `rollout` calls: predict_actions on the cameras (and state) it needs."""
    def policy(observations: list[dict[str, Any]], instructions: list[str]) -> np.ndarray:
        inputs = [observation_inputs(model, obs) for obs in observations]
        states = [state for _, state in inputs] if model.observation.state_dim is not None else None
        return model.predict_actions([images for images, _ in inputs], instructions, unnorm_key, states)

    return policy


def rollout_settings(cfg: dict[str, Any], saved: dict[str, Any] | None = None) -> dict[str, Any]:
    """The `rollout` node: the checkpoint's saved one (`saved`) overridden by the config's values that are set."""
    settings = {**(saved or {}), **{k: v for k, v in cfg["rollout"].items() if v is not None}}
    if not settings.get("env"):
        raise ConfigError("config key 'rollout.env' is not set (and the checkpoint's config has none): name a "
                          "closed-loop environment, e.g. rollout.env=block-reach")
    return settings


def episode_seeds(settings: dict[str, Any]) -> list[int]:
    """Seeds first_seed, first_seed + 1, ... of `rollout.episodes` episodes."""
    return list(range(int(settings["first_seed"]), int(settings["first_seed"]) + int(settings["episodes"])))


def scripted_expert(settings: dict[str, Any]) -> EnvPolicy | None:
    """The environment's scripted expert (None when it has none, or `rollout.expert` is false): block-reach's
    with `expert_noise` on its moves (none when unset), Meta-World's own (noiseless)."""
    if not settings.get("expert", True):
        return None
    if settings["env"] == ENV_NAME:
        return ExpertPolicy(noise=float(settings.get("expert_noise") or 0.0))
    return MetaWorldExpert() if settings["env"] == METAWORLD else None


def evaluate_closed_loop(cfg: dict[str, Any], model: VisionLanguageModel) -> dict[str, Any]:
    """Roll out `model` (and the controls); print, save and log the success rates."""
    settings = rollout_settings(cfg, model.config.get("rollout", {}))
    execution = ExecutionSettings.from_config(model.chunk_size, settings)
    policy = model_policy(model, settings.get("unnorm_key"))
    if settings.get("tasks"):
        from vlx.evaluation.task_suite import evaluate_tasks  # here: task_suite builds on this module's helpers

        return evaluate_tasks(cfg, settings, policy, execution)
    env, kwargs = settings["env"], settings.get("env_kwargs") or {}
    seeds = episode_seeds(settings)
    output_dir = Path(cfg["output_dir"])
    common = {"env_kwargs": kwargs, "batch_size": int(settings["batch_size"])}
    results = {"policy": rollout(policy, env, seeds, num_videos=int(settings["videos"]),
                                 video_dir=output_dir / "videos", execution=execution, **common)}
    print(f"success_rate={results['policy'].success_rate:.3f}")
    if settings.get("blind_instruction"):
        results["blind"] = rollout(policy, env, seeds, instruction_override=settings["blind_instruction"],
                                   execution=execution, **common)
        print(f"blind_success_rate={results['blind'].success_rate:.3f}")
    expert = scripted_expert(settings)
    if expert is not None:
        results["expert"] = rollout(expert, env, seeds, **common)
        print(f"expert_success_rate={results['expert'].success_rate:.3f}")
    print(f"episodes={len(seeds)}")
    print(f"mean_steps={results['policy'].mean_steps:.1f}")
    report = write_report(results, settings, output_dir, offline_action_metrics(cfg, model, settings))
    log_to_wandb(cfg, report, results["policy"].videos, {"rollout/mean_steps": results["policy"].mean_steps})
    return report


def evaluate_expert(cfg: dict[str, Any]) -> dict[str, Any]:
    """`rollout.policy=expert`: the environment's scripted expert alone, no checkpoint (`rollout.tasks` too)."""
    settings = rollout_settings(cfg)
    expert = scripted_expert({**settings, "expert": True})
    if expert is None:
        raise ConfigError(f"rollout.policy=expert: rollout.env={settings['env']!r} has no scripted expert (block-reach "
                          "and metaworld have one); evaluate a checkpoint instead")
    if settings.get("tasks"):
        from vlx.evaluation.task_suite import evaluate_tasks  # here: task_suite builds on this module's helpers

        return evaluate_tasks(cfg, settings, expert, None)
    seeds, output_dir = episode_seeds(settings), Path(cfg["output_dir"])
    result = rollout(expert, settings["env"], seeds, env_kwargs=settings.get("env_kwargs") or {},
                     batch_size=int(settings["batch_size"]), num_videos=int(settings["videos"]),
                     video_dir=output_dir / "videos")
    print(f"success_rate={result.success_rate:.3f}")
    print(f"episodes={len(seeds)}")
    print(f"mean_steps={result.mean_steps:.1f}")
    report = write_report({"policy": result}, settings, output_dir, {})
    log_to_wandb(cfg, report, result.videos, {"rollout/mean_steps": result.mean_steps})
    return report


def offline_action_metrics(cfg: dict[str, Any], model: VisionLanguageModel,
                           settings: dict[str, Any]) -> dict[str, float]:
    """Action-token accuracy on held-out demonstration steps, and the same with the blind instruction."""
    eval_cfg = cfg["eval"] if cfg["eval"].get("demos") else model.config.get("eval", {})
    if not eval_cfg.get("demos"):
        return {}
    cameras = model.observation.cameras
    demos = RobomimicFile(eval_cfg["demos"], cameras or "agentview_image", filter_key=eval_cfg.get("demos_filter_key"),
                          where="eval.demos", instruction=None, state_keys=model.observation.state_keys)
    metrics: dict[str, float] = {}
    for prefix, instruction in (("", None), ("blind_", settings.get("blind_instruction"))):
        if prefix and not instruction:
            continue
        scores = evaluate_actions(model, demos, settings.get("unnorm_key"), eval_cfg.get("demos_limit"), instruction)
        metrics.update({f"{prefix}action_accuracy": scores.action_accuracy, f"{prefix}action_l1": scores.action_l1})
        print(f"{prefix}action_accuracy={scores.action_accuracy:.3f}")
        print(f"{prefix}action_l1={scores.action_l1:.3f}")
    return metrics


def write_report(results: dict[str, RolloutResult], settings: dict[str, Any], output_dir: Path,
                 offline: dict[str, float]) -> dict[str, Any]:
    """`rollout.json`: the rates, the offline action metrics, the settings and every episode."""
    report: dict[str, Any] = {f"{name}_success_rate" if name != "policy" else "success_rate": r.success_rate
                              for name, r in results.items()}
    report.update(offline)
    report["settings"] = settings
    report["episodes"] = {name: [vars(e) for e in r.episodes] for name, r in results.items()}
    report["videos"] = [str(v) for v in results["policy"].videos]
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "rollout.json").write_text(json.dumps(report, indent=1, default=_plain))
    print(f"rollout={output_dir / 'rollout.json'}")
    for video in report["videos"]:
        print(f"video={video}")
    return report


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else str(value)


def log_to_wandb(cfg: dict[str, Any], report: dict[str, Any], videos: list[Path], extra: dict[str, Any] | None = None,
                 tables: dict[str, tuple[list[str], list[list[Any]]]] | None = None) -> None:
    """One W&B run (same project/offline settings as training) with the rates, `extra` values, the rollout videos
    and `tables` (name -> (columns, rows))."""
    if cfg["logger"]["name"] != "wandb":
        return
    import wandb

    logger = cfg["logger"]
    run = wandb.init(project=logger["project"], mode="offline" if logger["offline"] else "online",
                     group=logger.get("group") or cfg["run_name"], name=f"{cfg['run_name']}-rollout", job_type="eval",
                     dir=cfg["output_dir"], config={"rollout": report["settings"], "checkpoint": cfg.get("checkpoint")})
    rates = {f"rollout/{key}": value for key, value in report.items() if isinstance(value, float)}
    clips = {f"rollout/video_{index}": wandb.Video(str(path), format="gif") for index, path in enumerate(videos)}
    frames = {f"rollout/{name}": wandb.Table(columns=columns, data=rows)
              for name, (columns, rows) in (tables or {}).items()}
    run.log({**rates, **(extra or {}), **clips, **frames})
    run.finish()
