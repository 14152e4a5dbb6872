"""Root conftest: loads kvmlab's pytest plugin (fixtures/) for this checkout."""

pytest_plugins = ["kvmlab_fixtures"]
