#!/usr/bin/env bash
# Installs everything the lab and the test suite need on a Debian 12 machine, as root.
# Idempotent: each step checks whether its work is already done.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
lab_root=${DRORCH_LAB_DIR:-/var/lib/drorch-lab}
criu_root=$lab_root/criu
venv=${DRORCH_VENV:-$repo/.venv}
export DEBIAN_FRONTEND=noninteractive

say() { printf '[setup] %s\n' "$*"; }

packages=(libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients qemu-system-x86 qemu-utils
          libvirt-dev pkg-config docker.io busybox-static cpio dnsmasq-base iproute2 gcc python3-venv
          systemd openssl podman chromium chromium-driver lxd lxd-client e2fsprogs nftables acl)
# systemd-analyze checks the daemon's unit; openssl makes the lab's certificates; podman: the lab runs a Podman
# service per site; chromium and its driver: the status page is tested in a real browser; lxd: an LXD per site;
# e2fsprogs: the lab group's VM gets an ext4 disk (mkfs.ext4) and says what dumpe2fs finds on it; nftables: the
# lab cuts a place's paths to another on loopback (lab cut, heal); acl: see the places' uids below
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]}"
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# Knot, the authoritative DNS server the DNS cutover is tested against: the tests start it on loopback
# themselves, so the package's own service is kept from starting (policy-rc.d) where nothing else keeps it.
if ! dpkg-query -W -f='${Status}' knot 2>/dev/null | grep -q 'install ok installed'; then
  say "installing knot (its service not started)"
  placed=
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    placed=1
  fi
  apt-get update -q
  apt-get install -y -q --no-install-recommends knot
  if [ -n "$placed" ]; then rm -f /usr/sbin/policy-rc.d; fi
fi

# PostgreSQL for the tests of daemons sharing one store; the tests start their own cluster, so the
# package is told not to create (and start) a main one.
if ! dpkg-query -W -f='${Status}' postgresql-15 2>/dev/null | grep -q 'install ok installed'; then
  say "installing postgresql-15 (no main cluster)"
  mkdir -p /etc/postgresql-common
  echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.conf
  apt-get update -q
  apt-get install -y -q --no-install-recommends -o Dpkg::Options::=--force-confold postgresql-15
fi

# libvirtd's QEMU driver refuses to start without these.
getent group kvm >/dev/null || groupadd -r kvm
getent group libvirt-qemu >/dev/null || groupadd -r libvirt-qemu
getent passwd libvirt-qemu >/dev/null || useradd -r -g libvirt-qemu -G kvm libvirt-qemu

# CRIU: bookworm's 3.17 fails on recent kernels; trixie's 4.x runs from a private folder with its own libc.
if ! "$criu_root/bin/criu" check >/dev/null 2>&1; then
  say "installing CRIU from trixie into $criu_root"
  cat > /etc/apt/sources.list.d/drorch-trixie.sources <<'SRC'
Types: deb
URIs: http://deb.debian.org/debian
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  cat > /etc/apt/preferences.d/drorch-trixie <<'PIN'
Package: *
Pin: release n=trixie
Pin-Priority: 100
PIN
  apt-get update -q
  dl=$(mktemp -d)
  (cd "$dl" && apt-get download -t trixie criu libcompel1 libc6 libbsd0 libgnutls30t64 libprotobuf-c1 \
     libnftables1 libnl-3-200 libnet1 libnettle8t64 libhogweed6t64 libidn2-0 libunistring5 libtasn1-6 \
     libp11-kit0 libgmp10 libffi8 libjansson4 libnftnl11 libmnl0 libxtables12 libmd0)
  rm -rf "$criu_root" && mkdir -p "$criu_root/root" "$criu_root/bin"
  for deb in "$dl"/*.deb; do dpkg-deb -x "$deb" "$criu_root/root"; done
  rm -rf "$dl"
  r=$criu_root/root
  cat > "$criu_root/bin/criu" <<WRAP
#!/bin/sh
exec $r/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 --library-path $r/usr/lib/x86_64-linux-gnu:$r/lib/x86_64-linux-gnu $r/usr/sbin/criu "\$@"
WRAP
  chmod 755 "$criu_root/bin/criu"
  "$criu_root/bin/criu" check
fi

# promtool (Debian's prometheus package) checks and tests drorch's alert rules: only the package's files are
# unpacked, so no Prometheus server is installed or started.
promtool=$lab_root/prometheus/usr/bin/promtool
if ! "$promtool" --version >/dev/null 2>&1; then
  say "unpacking promtool from Debian's prometheus package into $lab_root/prometheus"
  dl=$(mktemp -d)
  (cd "$dl" && { apt-get download prometheus 2>/dev/null || { apt-get update -q && apt-get download prometheus; }; })
  rm -rf "$lab_root/prometheus" && mkdir -p "$lab_root/prometheus"
  dpkg-deb -x "$dl"/prometheus_*.deb "$lab_root/prometheus"
  rm -rf "$dl"
  "$promtool" --version
fi

# etcd (Debian's etcd-server), the lab's witness cluster for automatic failover: only the package's files are
# unpacked, so no etcd service is installed or started; the lab starts its three members itself.
etcd=$lab_root/etcd/usr/bin/etcd
if ! "$etcd" --version >/dev/null 2>&1; then
  say "unpacking etcd from Debian's etcd-server package into $lab_root/etcd"
  dl=$(mktemp -d)
  (cd "$dl" && { apt-get download etcd-server 2>/dev/null || { apt-get update -q && apt-get download etcd-server; }; })
  rm -rf "$lab_root/etcd" && mkdir -p "$lab_root/etcd"
  dpkg-deb -x "$dl"/etcd-server_*.deb "$lab_root/etcd"
  rm -rf "$dl"
  "$etcd" --version
fi

# The Python environment: drorch itself plus its test tools.
if [ ! -x "$venv/bin/python" ]; then
  say "creating $venv"
  python3 -m venv "$venv"
fi
stamp=$venv/.drorch-installed
if [ ! -f "$stamp" ] || [ "$repo/pyproject.toml" -nt "$stamp" ]; then
  say "installing drorch and its test dependencies into $venv"
  "$venv/bin/pip" install -q --upgrade pip
  "$venv/bin/pip" install -q -e "$repo[dev]"
  touch "$stamp"
fi

# The lab runs each place's processes (its etcd member, and in the partition tests drorch's daemons) under a uid
# of its own in the lab's group (integration/lab_partition.py): they must reach the virtualenv's interpreter,
# wherever it was installed; a folder on its way that others may not enter lets the lab's group in, and no one else.
lab_group=64100
dir=$(dirname "$(readlink -f "$venv/bin/python")")
while [ "$dir" != / ]; do
  if [ $(( 0$(stat -c %a "$dir") & 1 )) -eq 0 ] && ! getfacl -cp "$dir" 2>/dev/null | grep -qx "group:$lab_group:..x"; then
    say "letting the lab's group through $dir to the interpreter"
    setfacl -m "g:$lab_group:x" "$dir"
  fi
  dir=$(dirname "$dir")
done
say "ready"
