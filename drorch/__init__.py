"""drorch: move libvirt VMs and Docker containers to a disaster-recovery site and back."""
