"""The generic registry: duplicates rejected, closest names in errors, temporary entries."""

import pytest

from stoker.registry import Registry, RegistryError


def test_register_get_names():
    r = Registry("widget")
    r.register("alpha", 1)
    r.register("beta")(2)
    assert r.get("alpha") == 1 and r.get("beta") == 2 and r.names() == ["alpha", "beta"]


def test_duplicates_are_rejected():
    r = Registry("widget")
    r.register("alpha", 1)
    with pytest.raises(RegistryError, match="widget 'alpha' is already registered"):
        r.register("alpha", 2)


def test_unknown_name_lists_the_closest():
    r = Registry("widget", group="stoker.widgets")
    r.register("shapes", 1)
    r.register("clicks", 2)
    with pytest.raises(RegistryError, match=r"unknown widget 'shape': did you mean 'shapes'\? .*stoker.widgets"):
        r.get("shape")


def test_temporary_registration_is_undone():
    r = Registry("widget")
    with r.temporary("tmp", 5):
        assert r.get("tmp") == 5
    assert "tmp" not in r.names()


def test_entry_points_are_discovered_lazily():
    from ingest.datasets import REGISTRY

    assert {"shapes", "clicks", "synthetic"} <= set(REGISTRY.names())
