"""drorch: moves libvirt/QEMU VMs, Docker and Podman containers and LXD instances to a disaster-recovery site and
back."""
