"""Registry behaviour: lookup, closest-match errors, argument checking and entry-point plugins."""

from __future__ import annotations

import sys
import textwrap

import pytest

from vlx.errors import ConfigError
from vlx.registry import PROJECTORS, VISION_BACKBONES, Registry, _load_plugins


def test_builtin_names_are_registered():
    assert {"linear", "mlp"} <= set(PROJECTORS.names())
    assert {"hf-clip", "timm-vit"} <= set(VISION_BACKBONES.names())


def test_unknown_name_lists_known_and_closest():
    with pytest.raises(ConfigError) as info:
        PROJECTORS.get("mpl", where="projector.name")
    message = str(info.value)
    assert "unknown projector 'mpl'" in message
    assert "projector.name" in message
    assert "Did you mean 'mlp'?" in message
    assert "linear, mlp" in message


def test_build_checks_arguments_against_signature():
    with pytest.raises(ConfigError, match=r"'projector.hiden_dim' is not an argument.*Did you mean 'hidden_dim'"):
        PROJECTORS.build({"name": "mlp", "hiden_dim": 3}, "projector", in_dim=2, out_dim=4)
    with pytest.raises(ConfigError, match=r"'projector' is missing out_dim"):
        PROJECTORS.build({"name": "mlp"}, "projector", in_dim=2)
    with pytest.raises(ConfigError, match=r"'projector.in_dim' is set by vlx itself"):
        PROJECTORS.build({"name": "mlp", "in_dim": 3}, "projector", in_dim=2, out_dim=4)
    with pytest.raises(ConfigError, match=r"'projector' needs a 'name'"):
        PROJECTORS.build({}, "projector")


def test_build_returns_configured_entry():
    projector = PROJECTORS.build({"name": "mlp", "hidden_dim": 7}, "projector", in_dim=3, out_dim=5)
    assert projector.linear_1.weight.shape == (7, 3)
    assert projector.linear_2.weight.shape == (5, 7)


def test_duplicate_registration_is_an_error():
    registry: Registry[object] = Registry("thing", "vlx.errors")
    registry.register("a")(object)
    with pytest.raises(ConfigError, match="registered twice"):
        registry.register("a")(dict)


def test_entry_point_plugin_registers_a_projector(tmp_path, monkeypatch):
    """A third-party package advertising `vlx.plugins` adds entries without touching vlx."""
    package = tmp_path / "my_vlx_plugin.py"
    package.write_text(textwrap.dedent("""
        from torch import nn
        from vlx.registry import PROJECTORS

        @PROJECTORS.register("identity-plugin")
        class Identity(nn.Module):
            def __init__(self, in_dim: int, out_dim: int):
                super().__init__()
            def forward(self, x):
                return x
    """))
    dist = tmp_path / "my_vlx_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: my-vlx-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[vlx.plugins]\nmy_plugin = my_vlx_plugin\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(PROJECTORS, "_entries", dict(PROJECTORS._entries))  # restored after the test
    monkeypatch.setattr(PROJECTORS, "_loaded", False)
    monkeypatch.delitem(sys.modules, "my_vlx_plugin", raising=False)
    _load_plugins.cache_clear()  # plugins are scanned once per process; rescan with the new package
    assert "identity-plugin" in PROJECTORS.names()
    projector = PROJECTORS.build({"name": "identity-plugin"}, "projector", in_dim=2, out_dim=2)
    assert type(projector).__module__ == "my_vlx_plugin"
