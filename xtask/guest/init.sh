#!/bin/sh
# PID 1 of the guest `cargo xtask test-kernel` boots: mounts what the plugin needs, loads
# the modules Debian builds as such, runs the recipe and powers off. Every result is a
# line "FB-RESULT <what> <value>" on the console (which carries escape sequences besides).
export PATH=/usr/local/bin:/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /run /tmp /var/lib/cni /var/log /sys/fs/bpf
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
mount -t bpf bpf /sys/fs/bpf
mkdir -p /run/netns
echo "FB-RESULT kernel $(uname -r)"
for module in veth bridge br_netfilter nf_conntrack sch_ingress cls_bpf; do
    modprobe "$module" || echo "FB-RESULT module-failed $module"
done
sh /recipe.sh
echo "FB-RESULT exit $?"
poweroff -f
