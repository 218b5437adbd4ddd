"""The lab's application networks: each site's on a subnet of its own, so that a workload that moves changes
its address (and on its way home gets its own back). The bridges live on this machine only."""

from __future__ import annotations

import docker
import docker.types

from integration.lab_base import Site, log

APP_NETWORKS = {"a": ("app-net", "10.231.31.0/24"), "b": ("app-net-dr", "10.231.32.0/24")}


def gateway(subnet: str) -> str:
    return subnet.rsplit(".", 1)[0] + ".1"


def ensure_docker(site: Site) -> None:
    name, subnet = APP_NETWORKS[site.name]
    client = docker.DockerClient(base_url=site.docker_url)
    try:
        if not client.networks.list(names=[name]):
            log(f"creating Docker network {name} ({subnet}) on site {site.name}")
            ipam = docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(subnet=subnet,
                                                                               gateway=gateway(subnet))])
            client.networks.create(name, driver="bridge", ipam=ipam,
                                   options={"com.docker.network.bridge.name": f"drl{site.name}app0"})
    finally:
        client.close()


def remove_docker(client: docker.DockerClient) -> None:
    for net in client.networks.list(names=[n for n, _ in APP_NETWORKS.values()]):
        log(f"removing Docker network {net.name}")
        net.remove()
