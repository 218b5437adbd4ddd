"""The container driver (`container_driver.ContainerDriver`): Docker and Podman containers moved by CRIU
checkpoint and restore or redeployed, their recovery points kept on the secondary's engine.

- `docker_engine`, `podman_engine`: one engine as the driver sees it; `docker_config`: configurations mapped.
- `container_points`: recovery points of containers.
"""
