#!/bin/sh
# The seed recipe on the guest's kernel: a node netns with its uplink to a switch and an
# external host, `flatbridge node setup`, pods added with the seed config, pod<->pod and
# external host<->pod traffic that must take the fast path (the counters say so), DEL of
# every pod, and nothing left. Busybox's shell prefers its own applets: iproute2, tc and
# iperf3 are called by their full paths.
set -u
IP=/usr/local/bin/ip
IPERF=/usr/local/bin/iperf3
FB=/opt/cni/bin/flatbridge
fail() { echo "FB-RESULT fail $*"; exit 1; }
in_node() { nsenter --net=/run/netns/node "$@"; }
in_ext() { nsenter --net=/run/netns/ext "$@"; }

# Every program, frame by frame (BPF_PROG_TEST_RUN), on this kernel's verifier.
tests=$(cd /tmp && /opt/tests/datapath_programs --test-threads=1 2>&1)
summary=$(echo "$tests" | grep "^test result:")
echo "FB-RESULT program-tests $summary"
echo "$summary" | grep -q "^test result: ok" || {
    echo "$tests" | grep -E -A2 "FAILED|panicked" | head -30 | sed "s/^/FB-RESULT detail /"
    fail "the program tests failed on this kernel"
}

for ns in node switch ext; do $IP netns add $ns || fail "netns $ns"; done
$IP link add eth0 netns node type veth peer name swp1 netns switch || fail "uplink veth"
$IP link add eth0 netns ext type veth peer name swp2 netns switch || fail "external veth"
$IP -n switch link add sw0 type bridge
$IP -n switch link set swp1 master sw0
$IP -n switch link set swp2 master sw0
for dev in sw0 swp1 swp2; do $IP -n switch link set $dev up; done
$IP -n node addr add 10.10.0.11/16 dev eth0
$IP -n node link set eth0 up
$IP -n node link set lo up
$IP -n node route add default via 10.10.0.1
$IP -n ext addr add 10.10.0.1/16 dev eth0
$IP -n ext link set eth0 up
$IP -n ext link set lo up

out=$(in_node $FB node setup --uplink eth0 --gateway 10.10.1.0/16 2>&1) || fail "node setup: $out"
echo "FB-RESULT node-setup ok"
in_node $FB version >/dev/null 2>&1

CONFIG='{"cniVersion":"0.3.1","name":"data","type":"flatbridge","bridge":"cni0","promiscMode":true,"ipam":{"type":"host-local","ranges":[[{"subnet":"10.10.0.0/16","rangeStart":"10.10.1.1","rangeEnd":"10.10.1.101","gateway":"10.10.1.0"}]],"routes":[{"dst":"0.0.0.0/0"}]}}'
cni() { # verb pod
    echo "$CONFIG" | CNI_COMMAND=$1 CNI_CONTAINERID=$2 CNI_NETNS=/run/netns/$2 CNI_IFNAME=eth0 \
        CNI_PATH=/opt/cni/bin in_node $FB
}
PODS="pod1 pod2 pod3 pod4 pod5 pod6 pod7 pod8 pod9 pod10"
for pod in $PODS; do
    $IP netns add $pod || fail "netns $pod"
    start=$(/usr/local/bin/date +%s%N)
    result=$(cni ADD $pod 2>&1) || fail "ADD $pod: $result"
    end=$(/usr/local/bin/date +%s%N)
    echo "FB-RESULT add-us $(( (end - start) / 1000 ))"
done
address() { $IP -n $1 -4 -o addr show dev eth0 | sed 's/.* inet \([0-9.]*\).*/\1/'; }
A=$(address pod1); B=$(address pod2)
echo "FB-RESULT pods $A $B"
counter() { in_node $FB status --json | tr -d ' \n' | sed "s/.*\"verdict\":\"$1\",\"packets\":\([0-9]*\).*/\1/"; }

nsenter --net=/run/netns/pod1 ping -c 2 -W 2 $B >/dev/null || fail "pod1 cannot ping pod2"
nsenter --net=/run/netns/pod1 ping -c 2 -W 2 10.10.0.1 >/dev/null || fail "pod1 cannot ping the external host"
in_ext ping -c 2 -W 2 $A >/dev/null || fail "the external host cannot ping pod1"
echo "FB-RESULT ping ok"

before=$(counter pod_to_pod)
nsenter --net=/run/netns/pod2 $IPERF -s -D -1 >/dev/null 2>&1
sleep 1
nsenter --net=/run/netns/pod1 $IPERF -c $B -t 2 >/dev/null 2>&1 || fail "iperf3 pod1 -> pod2"
after=$(counter pod_to_pod)
echo "FB-RESULT pod-to-pod $before $after"
[ $((after - before)) -gt 1000 ] || fail "pod to pod did not take the fast path: $before -> $after"

before=$(counter uplink_to_pod)
nsenter --net=/run/netns/pod1 $IPERF -s -D -1 >/dev/null 2>&1
sleep 1
in_ext $IPERF -c $A -t 2 >/dev/null 2>&1 || fail "iperf3 external -> pod1"
after=$(counter uplink_to_pod)
echo "FB-RESULT uplink-to-pod $before $after"
[ $((after - before)) -gt 1000 ] || fail "the external host's traffic did not take the fast path: $before -> $after"

in_node $FB status | grep -E "kernel|from_uplink|to_uplink" | sed 's/^/FB-RESULT status /'

for pod in $PODS; do
    out=$(cni DEL $pod 2>&1) || fail "DEL $pod: $out"
    out=$(cni DEL $pod 2>&1) || fail "second DEL $pod: $out"
done
left=$($IP -n node -o link show | grep -c ' fb' )
[ "$left" = 0 ] || fail "veths left: $left"
leases=$(ls /var/lib/cni/networks/data | grep -c '^10\.')
[ "$leases" = 0 ] || fail "leases left: $leases"
endpoints=$(in_node $FB status --json | tr -d ' \n' | grep -c '"endpoints":\[\]')
[ "$endpoints" = 1 ] || fail "endpoints left"
out=$(in_node $FB node teardown 2>&1) || fail "teardown: $out"
echo "FB-RESULT ok"
