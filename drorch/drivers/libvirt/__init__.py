"""The libvirt driver (`vm_driver.LibvirtDriver`): VMs moved by live migration, cold, or from recovery points,
their disks shipped through libvirt's own storage API."""
