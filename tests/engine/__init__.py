"""A real Docker Engine under the tests: a private dockerd, a locally built kind-node
image and the seed lab's kind cluster as real node containers (`ambientlab.docker_kind`).

Load the fixtures with `pytest_plugins = ["tests.engine.fixtures"]`.
"""
