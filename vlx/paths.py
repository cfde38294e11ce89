"""Where vlx's Hydra configs and recipes live: the source checkout, or inside the installed wheel.

A source (or editable) install reads `conf/` and `recipes/` at the repository root; a wheel carries
them under `vlx/_configs/`. Either way the CLI finds them, so recipes work from any directory.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def config_root() -> Path:
    """The directory holding `conf/` and `recipes/`."""
    bundled = PACKAGE_DIR / "_configs"
    return bundled if (bundled / "conf").is_dir() else PACKAGE_DIR.parent


def conf_dir() -> Path:
    return config_root() / "conf"


def recipes_dir() -> Path:
    return config_root() / "recipes"
