"""Domain definitions as drorch rewrites them for the other site, a drill, or a copied disk (no I/O here)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from drorch.model.playbook import Mappings, Resources


def domain_names(xml: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The networks a domain's interfaces use and the storage pools of its disks."""
    root = ET.fromstring(xml)
    networks = [s.get("network", "") for s in root.findall("./devices/interface[@type='network']/source")]
    pools = [s.get("pool", "") for s in root.findall("./devices/disk[@type='volume']/source")]
    return tuple(sorted(set(filter(None, networks)))), tuple(sorted(set(filter(None, pools))))


def map_domain_xml(xml: str, mappings: Mappings, resources: Resources | None) -> str:
    """The domain's definition for the target: mapped networks and pools, and a new size if given."""
    root = ET.fromstring(xml)
    changed = False
    for source in root.findall("./devices/interface[@type='network']/source"):
        name = source.get("network", "")
        if mappings.network(name) != name:
            source.set("network", mappings.network(name))
            changed = True
    for source in root.findall("./devices/disk[@type='volume']/source"):
        pool = source.get("pool", "")
        if mappings.pool(pool) != pool:
            source.set("pool", mappings.pool(pool))
            changed = True
    if resources is not None and resources.memory_mib:
        for tag in ("memory", "currentMemory"):
            el = root.find(tag)
            if el is not None:
                el.text, changed = str(resources.memory_mib * 1024), True
                el.set("unit", "KiB")
    if resources is not None and resources.vcpus:
        el = root.find("vcpu")
        if el is not None:
            el.text, changed = str(resources.vcpus), True
    return ET.tostring(root, encoding="unicode") if changed else xml


DRILL_NS = "urn:drorch:drill"


Chain = list[tuple[str, str]]  # a disk's backing files as (path, format), the one it reads first first


def drill_domain_xml(xml: str, clone: str, network: str, overlays: dict[str, tuple[str, Chain]],
                     mac: str | None = None) -> str:
    """A drill clone's definition: renamed, without UUID or MACs (but `mac` on its first interface), every
    interface on the drill's network, file consoles in files of its own, and its writable disks (by source) on
    copy-on-write overlays, each with the chain of the recovery point under it."""
    root = ET.fromstring(xml)
    name = root.find("name")
    original = name.text or "" if name is not None else ""
    if name is not None:
        name.text = clone
    for el in root.findall("uuid"):
        root.remove(el)
    for iface in root.findall("./devices/interface"):
        model = iface.find("model")
        for child in list(iface):
            iface.remove(child)
        iface.attrib = {"type": "network"}
        if mac is not None:
            ET.SubElement(iface, "mac", address=mac)
            mac = None
        ET.SubElement(iface, "source", network=network)
        if model is not None:
            iface.append(model)
    for log in root.findall("./devices/*[@type='file']/source[@path]"):
        folder, _, base = log.get("path", "").rpartition("/")
        base = base.replace(original, clone) if original and original in base else f"{clone}.{base}"
        log.set("path", f"{folder}/{base}")
    for disk in root.findall("./devices/disk"):
        source = disk.find("source")
        key = disk_source(disk)
        if source is None or key is None or key not in overlays:
            continue
        path, backing = overlays[key]
        disk.set("type", "file")
        source.attrib = {"file": path}
        _set_chain(disk, backing)
    metadata = root.find("metadata")
    if metadata is None:
        metadata = ET.SubElement(root, "metadata")
    ET.SubElement(metadata, f"{{{DRILL_NS}}}clone", of=original)
    return ET.tostring(root, encoding="unicode")


def disk_source(disk: ET.Element) -> str | None:
    """A writable disk's source as `file` or `pool/volume`; None for CD-ROMs, read-only and network disks."""
    source = disk.find("source")
    if source is None or disk.get("device", "disk") != "disk" or disk.find("readonly") is not None:
        return None
    if disk.get("type") == "file":
        return source.get("file")
    if disk.get("type") == "volume":
        return f"{source.get('pool')}/{source.get('volume')}"
    return None


def writable_disks(xml: str) -> list[ET.Element]:
    """The disks whose contents belong to the guest: not CD-ROMs, not read-only."""
    return [d for d in ET.fromstring(xml).findall("./devices/disk") if disk_source(d) is not None]


def point_disks_at(xml: str, volumes: dict[str, tuple[str, str]], chains: dict[str, Chain] | None = None) -> str:
    """The definition with each disk whose source (`file` or `pool/volume`) is a key of `volumes` now on that
    (pool, volume), reading the chain `chains` gives it, or none: a copied disk is whole where it lands, an
    overlay reads a recovery point's chain."""
    root = ET.fromstring(xml)
    for disk in root.findall("./devices/disk"):
        key, source = disk_source(disk), disk.find("source")
        if key is None or source is None or key not in volumes:
            continue
        pool, volume = volumes[key]
        disk.set("type", "volume")
        source.attrib = {"pool": pool, "volume": volume}
        _set_chain(disk, (chains or {}).get(key, []))
    return ET.tostring(root, encoding="unicode")


def _set_chain(disk: ET.Element, chain: Chain) -> None:
    """The disk's backing chain named in the definition itself (libvirt's backingStore input), so that QEMU
    reads exactly these files under an overlay, whatever their own headers say; an empty one ends it."""
    for old in disk.findall("backingStore"):
        disk.remove(old)
    at = disk
    for path, fmt in chain:
        store = ET.SubElement(at, "backingStore", type="file")
        ET.SubElement(store, "format", type=fmt)
        ET.SubElement(store, "source", file=path)
        at = store
    ET.SubElement(at, "backingStore")
    driver = disk.find("driver")
    if chain and driver is not None:
        driver.set("type", "qcow2")  # only a qcow2 image has a backing file


def disk_chain(disk: ET.Element) -> Chain:
    """The backing chain a disk's definition names (empty when it names none)."""
    out: Chain = []
    at = disk.find("backingStore")
    while at is not None and at.find("source") is not None:
        source, fmt = at.find("source"), at.find("format")
        out.append((source.get("file", "") if source is not None else "",
                    fmt.get("type", "raw") if fmt is not None else "raw"))
        at = at.find("backingStore")
    return out
