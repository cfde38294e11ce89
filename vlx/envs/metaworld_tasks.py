"""Meta-World's task names, LeRobot's difficulty splits and one language instruction per task.

The 50 `-v3` tasks are grouped as LeRobot's `metaworld_config.json` does (`DIFFICULTY_TO_TASKS`: easy 28,
medium 11, hard 6, very-hard 5 — LeRobot spells the last `very_hard`, accepted too); `mt10` is Meta-World's own
MT10 (`metaworld.env_dict.MT10_V3`) and `mt50` all 50. The instructions are LeRobot's `TASK_DESCRIPTIONS`
(huggingface/lerobot, `src/lerobot/envs/metaworld_config.json`), so a policy trained on LeRobot's Meta-World
data hears the same words. `push-v3` and `push-back-v3` share one description there ("Push the puck to a
goal"); the wrong-instruction control therefore always picks an instruction that differs in its words.
Pure data and name resolution: nothing here imports MuJoCo.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from vlx.errors import ConfigError
from vlx.registry import closest

INSTRUCTIONS: dict[str, str] = {
    "assembly-v3": "Pick up a nut and place it onto a peg",
    "basketball-v3": "Dunk the basketball into the basket",
    "bin-picking-v3": "Grasp the puck from one bin and place it into another bin",
    "box-close-v3": "Grasp the cover and close the box with it",
    "button-press-topdown-v3": "Press a button from the top",
    "button-press-topdown-wall-v3": "Bypass a wall and press a button from the top",
    "button-press-v3": "Press a button",
    "button-press-wall-v3": "Bypass a wall and press a button",
    "coffee-button-v3": "Push a button on the coffee machine",
    "coffee-pull-v3": "Pull a mug from a coffee machine",
    "coffee-push-v3": "Push a mug under a coffee machine",
    "dial-turn-v3": "Rotate a dial 180 degrees",
    "disassemble-v3": "Pick a nut out of a peg",
    "door-close-v3": "Close a door with a revolving joint",
    "door-lock-v3": "Lock the door by rotating the lock clockwise",
    "door-open-v3": "Open a door with a revolving joint",
    "door-unlock-v3": "Unlock the door by rotating the lock counter-clockwise",
    "hand-insert-v3": "Insert the gripper into a hole",
    "drawer-close-v3": "Push and close a drawer",
    "drawer-open-v3": "Open a drawer",
    "faucet-open-v3": "Rotate the faucet counter-clockwise",
    "faucet-close-v3": "Rotate the faucet clockwise",
    "hammer-v3": "Hammer a screw on the wall",
    "handle-press-side-v3": "Press a handle down sideways",
    "handle-press-v3": "Press a handle down",
    "handle-pull-side-v3": "Pull a handle up sideways",
    "handle-pull-v3": "Pull a handle up",
    "lever-pull-v3": "Pull a lever down 90 degrees",
    "peg-insert-side-v3": "Insert a peg sideways",
    "pick-place-wall-v3": "Pick a puck, bypass a wall and place the puck",
    "pick-out-of-hole-v3": "Pick up a puck from a hole",
    "reach-v3": "Reach a goal position",
    "push-back-v3": "Push the puck to a goal",
    "push-v3": "Push the puck to a goal",
    "pick-place-v3": "Pick and place a puck to a goal",
    "plate-slide-v3": "Slide a plate into a cabinet",
    "plate-slide-side-v3": "Slide a plate into a cabinet sideways",
    "plate-slide-back-v3": "Get a plate from the cabinet",
    "plate-slide-back-side-v3": "Get a plate from the cabinet sideways",
    "peg-unplug-side-v3": "Unplug a peg sideways",
    "soccer-v3": "Kick a soccer into the goal",
    "stick-push-v3": "Grasp a stick and push a box using the stick",
    "stick-pull-v3": "Grasp a stick and pull a box with the stick",
    "push-wall-v3": "Bypass a wall and push a puck to a goal",
    "reach-wall-v3": "Bypass a wall and reach a goal",
    "shelf-place-v3": "Pick and place a puck onto a shelf",
    "sweep-into-v3": "Sweep a puck into a hole",
    "sweep-v3": "Sweep a puck off the table",
    "window-open-v3": "Push and open a window",
    "window-close-v3": "Push and close a window",
}

_SPLIT_NAMES: dict[str, str] = {
    "easy": "button-press button-press-topdown button-press-topdown-wall button-press-wall coffee-button dial-turn "
            "door-close door-lock door-open door-unlock drawer-close drawer-open faucet-close faucet-open handle-press "
            "handle-press-side handle-pull handle-pull-side lever-pull plate-slide plate-slide-back "
            "plate-slide-back-side plate-slide-side reach reach-wall window-close window-open peg-unplug-side",
    "medium": "basketball bin-picking box-close coffee-pull coffee-push hammer peg-insert-side push-wall soccer sweep "
              "sweep-into",
    "hard": "assembly hand-insert pick-out-of-hole pick-place push push-back",
    "very-hard": "shelf-place disassemble stick-pull stick-push pick-place-wall",
}
SPLITS: dict[str, list[str]] = {split: [f"{name}-v3" for name in names.split()]
                                for split, names in _SPLIT_NAMES.items()}
MT10 = ["reach-v3", "push-v3", "pick-place-v3", "door-open-v3", "drawer-open-v3", "drawer-close-v3",
        "button-press-topdown-v3", "peg-insert-side-v3", "window-open-v3", "window-close-v3"]
MT50 = [task for tasks in SPLITS.values() for task in tasks]
GROUPS: dict[str, list[str]] = {**SPLITS, "mt10": MT10, "mt50": MT50}


def check_task(task: Any, where: str) -> str:
    """`task` when it is one of the 50 Meta-World task names (`-v3` may be left out), else a one-line ConfigError
    with the closest name."""
    if isinstance(task, str) and (task in INSTRUCTIONS or f"{task}-v3" in INSTRUCTIONS):
        return task if task in INSTRUCTIONS else f"{task}-v3"
    hint = closest(task, [*INSTRUCTIONS, *GROUPS]) if isinstance(task, str) else None
    suggestion = f"; did you mean {hint!r}?" if hint else ""
    raise ConfigError(f"{where}={task!r} is not a Meta-World task{suggestion} (tasks end in -v3, e.g. reach-v3; "
                      f"groups: {', '.join(GROUPS)})", kind="unknown-task")


def resolve_tasks(spec: str | Sequence[str], where: str) -> list[str]:
    """Task names from `spec`: a group (easy, medium, hard, very-hard, mt10, mt50), a comma-separated string of
    names and groups, or a list of them; duplicates dropped, order kept."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    tasks: list[str] = []
    for item in items:
        name = item.strip().replace("_", "-") if isinstance(item, str) else item
        for task in GROUPS.get(name) or [check_task(name, where)]:
            if task not in tasks:
                tasks.append(task)
    if not tasks:
        raise ConfigError(f"{where} names no Meta-World task; give task names or a group ({', '.join(GROUPS)})")
    return tasks


def split_of(task: str) -> str:
    """LeRobot's difficulty split of `task` (easy, medium, hard or very-hard)."""
    return next(split for split, tasks in SPLITS.items() if task in tasks)


def wrong_instruction(task: str, tasks: Sequence[str]) -> str:
    """Another task's instruction for the wrong-instruction control: the next task of `tasks` (cyclically) whose
    instruction differs from `task`'s, else the next such task of MT50."""
    for pool in (list(tasks), MT50):
        start = pool.index(task) + 1 if task in pool else 0
        for other in pool[start:] + pool[:start]:
            if INSTRUCTIONS[other] != INSTRUCTIONS[task]:
                return INSTRUCTIONS[other]
    raise ConfigError(f"no other Meta-World task has an instruction different from {task!r}'s")  # unreachable
