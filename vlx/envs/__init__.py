"""Closed-loop environments: the built-in `block-reach` task, its scripted expert, the `gymnasium`, `robosuite`
and `metaworld` adapters, the robomimic-HDF5 demo recorders and the batched rollout evaluator. Importing this
package registers the environments in `vlx.registry.ENVIRONMENTS` (the registry imports it lazily)."""

from vlx.envs.block_reach import PALETTE, BlockReach, EnvStepError
from vlx.envs.expert import ExpertPolicy, expert_action, perturb
from vlx.envs.gym_adapter import GymnasiumEnv  # registers `gymnasium` (gymnasium is imported lazily)
from vlx.envs.metaworld_env import MetaWorldEnv, MetaWorldExpert  # registers `metaworld` (imported lazily)
from vlx.envs.record import RecordSummary, ensure_demos, record_demos
from vlx.envs.robosuite_adapter import RobosuiteEnv  # registers `robosuite` (robosuite is imported lazily)
from vlx.envs.rollout import EpisodeResult, RolloutResult, rollout

__all__ = [
    "PALETTE", "BlockReach", "EnvStepError", "EpisodeResult", "ExpertPolicy", "GymnasiumEnv", "MetaWorldEnv",
    "MetaWorldExpert", "RecordSummary", "RobosuiteEnv", "RolloutResult", "ensure_demos", "expert_action", "perturb",
    "record_demos", "rollout",
]
