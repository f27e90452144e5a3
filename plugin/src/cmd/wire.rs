//! ADD's promise that an address it hands out is used by nobody on the wire (RFC 5227 for
//! IPv4, RFC 4862's duplicate address detection for IPv6), mostly without waiting for it.
//!
//! The uplink program remembers the sender of every ARP frame from the wire
//! (`arp_claims`): a host that uses an address names it whenever it ARPs, and answers a
//! probe for it. For IPv6 it remembers who neighbour discovery says uses an address it was
//! asked about (`nd_claims`): the target of an advertisement (the answer to a probe, a
//! solicitation from :: to the address's solicited-node group, goes to all nodes) or the
//! source of a solicitation. Both families take the same steps below, each in its own
//! maps. Each ADD probes the addresses IPAM will hand out next, without waiting
//! (`arp_probes` keeps when), and a second time once half the probe time has passed. An
//! address probed twice so (the first time at least `arpProbeMs` ago) and claimed by
//! nobody since is handed out at once, with one more probe. An address probed too
//! recently, or only once, waits for the rest of the probe time (sending its second probe
//! first); one never probed (the first ADD on a node), probed too long ago, or claimed
//! before its probe is probed and waited for as without the datapath. A claim of any
//! address checked so that comes by the end of ADD fails the ADD (the address is marked
//! as conflicting where IPAM can hand out another, so that the retry does). The agent
//! keeps the next addresses of the latest ADD fresh.
use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::Duration,
};

use flatbridge_common::{ArpClaim, ArpProbe};

use crate::datapath::DatapathError;

use crate::{
    arp::{ArpSocket, announcement_frame},
    cni::{CniError, code},
    datapath::Datapath,
    kernel::{monotonic_ns, nanos as ns},
    mac::Mac,
};

/// How many of the next addresses of each range set an ADD probes ahead: enough that
/// back-to-back ADDs (a few ms each) reach an address at least the default 100 ms after
/// its probe.
pub const PROBE_AHEAD: usize = 32;
/// A probe older than this says too little of the address now: it is probed again.
pub const PROBE_FRESH: Duration = Duration::from_secs(5 * 60);
/// An address probed more recently than this is not probed again ahead of its ADD (the
/// agent re-probes the ones it keeps fresh after this too).
pub const REPROBE_AFTER: Duration = Duration::from_secs(60);
/// A claim older than this no longer says the address is in use; a younger one that
/// predates every probe sends the address to a probe that is waited for.
pub const CLAIM_MEMORY: Duration = Duration::from_secs(10 * 60);

/// What the wire's memory says of an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Judgement {
    /// Probed twice, first at `since_ns` (at least the probe time ago), the second time at
    /// least half the probe time ago, and claimed by nobody since the first.
    Free { since_ns: u64 },
    /// Somebody claimed it after it was probed.
    InUse { mac: [u8; 6] },
    /// First probed at `since_ns`, and second at `second_ns` if it was: not long enough
    /// ago yet. Ask again once the probe time has passed (sending the second probe first
    /// when there is none).
    Pending { since_ns: u64, second_ns: Option<u64> },
    /// Never probed, probed too long ago, or claimed before its probe: probe and wait.
    Unknown,
}

/// The probes of an address that still say something at `now_ns`, oldest first. Two sent
/// less than half the probe time `wait` apart (two ADDs probing ahead at once) count as
/// one: the second is there for the first's frame or answer that got lost.
fn fresh_probes(probe: Option<ArpProbe>, now_ns: u64, wait: Duration) -> (Option<u64>, Option<u64>) {
    let fresh = |at: u64| at != 0 && at <= now_ns && now_ns - at <= ns(PROBE_FRESH);
    let Some(probe) = probe else {
        return (None, None);
    };
    match (fresh(probe.previous_ns), fresh(probe.last_ns)) {
        (true, true) => {
            let first = probe.previous_ns.min(probe.last_ns);
            let second = probe.previous_ns.max(probe.last_ns);
            (Some(first), (second - first >= ns(wait / 2)).then_some(second))
        }
        (true, false) => (Some(probe.previous_ns), None),
        (false, true) => (Some(probe.last_ns), None),
        (false, false) => (None, None),
    }
}

/// Judges an address from its probes and its last claim at `now_ns`, `wait` being the
/// probe time (`arpProbeMs`). As RFC 5227's probe that is waited for, two probes: the
/// first at least `wait` ago, the second at least `wait / 2` ago.
pub fn judge(probe: Option<ArpProbe>, claim: Option<ArpClaim>, now_ns: u64, wait: Duration) -> Judgement {
    let age = |at: u64| now_ns.saturating_sub(at);
    let (first, second) = fresh_probes(probe, now_ns, wait);
    let claim = claim.filter(|claim| age(claim.seen_ns) <= ns(CLAIM_MEMORY));
    if let Some(claim) = claim {
        return match first {
            Some(probed) if claim.seen_ns >= probed => Judgement::InUse { mac: claim.mac },
            _ => Judgement::Unknown,
        };
    }
    match (first, second) {
        (None, _) => Judgement::Unknown,
        (Some(since_ns), Some(second)) if age(since_ns) >= ns(wait) && age(second) >= ns(wait / 2) => {
            Judgement::Free { since_ns }
        }
        (Some(since_ns), second_ns) => Judgement::Pending { since_ns, second_ns },
    }
}

/// Whether an address to hand out soon, with `probe`, gets a probe ahead at `now_ns`: none
/// yet (or none fresh), only one that is at least half the probe time old, or the last
/// [`REPROBE_AFTER`] ago.
pub fn wants_probe_ahead(probe: ArpProbe, now_ns: u64, wait: Duration) -> bool {
    match fresh_probes(Some(probe), now_ns, wait) {
        (None, _) => true,
        (Some(first), None) => now_ns - first >= ns(wait / 2),
        (Some(_), Some(last)) => now_ns - last >= ns(REPROBE_AFTER),
    }
}

/// The wire as ADD sees it: the bridge to send probes and announcements out of and, with
/// the datapath, the uplink program's memory of claims. With the datapath, frames go out
/// through it (`Datapath::inject`) and answers are read from the memory; a packet socket
/// on the bridge is opened only without it (or when the pins predate the inject program):
/// closing one waits for an RCU grace period, which would cost every ADD 8 to 16 ms.
pub struct Wire<'a> {
    pub bridge_ifindex: u32,
    pub bridge_mac: [u8; 6],
    pub memory: Option<&'a Datapath>,
    socket: std::cell::OnceCell<ArpSocket>,
    nd_socket: std::cell::OnceCell<ArpSocket>,
}

/// An address checked before it was handed out: a claim after `since_ns` (its first probe)
/// is checked again at the end of ADD, when the pod is about to be announced.
#[derive(Clone, Copy, Debug)]
pub struct LateCheck {
    pub ip: IpAddr,
    pub since_ns: u64,
}

/// What the wire said of the addresses of one lease.
pub enum Outcome {
    /// Nobody uses them (the datapath's memory is to be asked again at the end of ADD).
    Free(Vec<LateCheck>),
    /// `ip` is in use by `mac`.
    InUse { ip: IpAddr, mac: [u8; 6] },
}

fn probe_error(ip: IpAddr, error: impl std::fmt::Display) -> CniError {
    CniError::new(
        code::IO_FAILURE,
        format!("failed to probe {ip} on the wire: {error}"),
    )
}

impl<'a> Wire<'a> {
    pub fn new(bridge_ifindex: u32, bridge_mac: [u8; 6], memory: Option<&'a Datapath>) -> Self {
        Self {
            bridge_ifindex,
            bridge_mac,
            memory,
            socket: std::cell::OnceCell::new(),
            nd_socket: std::cell::OnceCell::new(),
        }
    }

    /// The packet socket that sends frames (and receives ARP).
    fn socket(&self) -> std::io::Result<&ArpSocket> {
        if let Some(socket) = self.socket.get() {
            return Ok(socket);
        }
        let socket = ArpSocket::open(self.bridge_ifindex, self.bridge_mac)?;
        Ok(self.socket.get_or_init(|| socket))
    }

    /// The packet socket that probes `ip`: it receives the answers of its family.
    fn probing_socket(&self, ip: IpAddr) -> std::io::Result<&ArpSocket> {
        if ip.is_ipv4() {
            return self.socket();
        }
        if let Some(socket) = self.nd_socket.get() {
            return Ok(socket);
        }
        let socket = ArpSocket::open_ipv6(self.bridge_ifindex, self.bridge_mac)?;
        Ok(self.nd_socket.get_or_init(|| socket))
    }

    /// The probe for `ip` from the bridge: an RFC 5227 ARP probe, or RFC 4862 duplicate
    /// address detection (a solicitation from ::).
    fn probe_frame(&self, ip: IpAddr) -> Vec<u8> {
        match ip {
            IpAddr::V4(ip) => crate::arp::probe_frame(self.bridge_mac, ip).to_vec(),
            IpAddr::V6(ip) => crate::ndp::dad_solicitation(self.bridge_mac, ip).to_vec(),
        }
    }

    /// The last claim of `ip` the memory has, unless it is the bridge's own (a frame of the
    /// node's the wire sent back: the node holds no pod's address).
    fn claim(&self, memory: &Datapath, ip: IpAddr) -> Result<Option<ArpClaim>, DatapathError> {
        Ok(memory
            .wire_claim(ip)?
            .filter(|claim| claim.mac != self.bridge_mac))
    }

    /// Sends one frame out of the bridge: through the datapath when there is one, over the
    /// socket otherwise. Returns whether the datapath sent it.
    fn send(&self, frame: &[u8]) -> std::io::Result<bool> {
        if let Some(memory) = self.memory {
            match memory.inject(self.bridge_ifindex, frame) {
                Ok(()) => return Ok(true),
                Err(error) => log::debug!("sending through the datapath failed, using a socket: {error}"),
            }
        }
        self.socket()?.send(frame).map(|()| false)
    }

    /// Announces that `ip` is at `mac` (RFC 5227's ARP Announcement), twice.
    pub fn announce(&self, mac: [u8; 6], ip: Ipv4Addr) -> std::io::Result<()> {
        let frame = announcement_frame(mac, ip);
        self.send(&frame)?;
        self.send(&frame).map(drop)
    }

    /// Announces that `ip` is at `mac`, as [`Self::announce`] or [`Self::announce_ipv6`].
    pub fn announce_any(&self, mac: [u8; 6], ip: IpAddr) -> std::io::Result<()> {
        match ip {
            IpAddr::V4(ip) => self.announce(mac, ip),
            IpAddr::V6(ip) => self.announce_ipv6(mac, ip),
        }
    }

    /// Announces that the IPv6 address `ip` is at `mac` (an unsolicited Neighbor
    /// Advertisement with Override, RFC 4861 7.2.6), twice.
    pub fn announce_ipv6(&self, mac: [u8; 6], ip: Ipv6Addr) -> std::io::Result<()> {
        let frame = crate::ndp::unsolicited_advertisement(mac, ip);
        self.send(&frame)?;
        self.send(&frame).map(drop)
    }

    /// Marks each of `upcoming` as wanted by this ADD (one stamp for all: the agent keeps
    /// the latest ADD's fresh) and probes the ones that want it ([`wants_probe_ahead`]),
    /// waiting for nothing. Failures cost the next pods a wait, nothing else.
    pub fn probe_ahead(&self, upcoming: &[IpAddr], wait: Duration) {
        let Some(memory) = self.memory else {
            return;
        };
        // Each family on its own: pins older than the IPv6 maps still probe IPv4 ahead.
        let mut probes = Vec::with_capacity(upcoming.len());
        for family in memory.want_wire_probes(upcoming, monotonic_ns()) {
            match family {
                Ok(wanted) => probes.extend(wanted),
                Err(error) => log::debug!("marking the next addresses to probe ahead failed: {error}"),
            }
        }
        for (ip, probe) in probes {
            if !wants_probe_ahead(probe, monotonic_ns(), wait) {
                continue;
            }
            // Its entry was just stamped: the program remembers the answers.
            if let Err(error) = self.probe_recorded(ip, true, false) {
                log::debug!("probing {ip} ahead failed: {error}");
                return;
            }
        }
    }

    /// One probe for `ip`, recorded in the memory when there is one; when it was sent.
    pub fn probe(&self, ip: IpAddr) -> Result<u64, CniError> {
        self.probe_recorded(ip, true, true)
    }

    /// One probe for `ip`, recorded in the memory after it was sent; when it was sent. The
    /// uplink program remembers the answers for the IPv6 addresses in `nd_probes` only, so
    /// with `ensure_entry` the entry is made first when missing (the agent's upkeep may have
    /// just forgotten it; `probe_ahead` stamped its own). Failing to record fails the probe
    /// only when `must_record` (a node whose pins predate the memory still probes).
    fn probe_recorded(&self, ip: IpAddr, must_record: bool, ensure_entry: bool) -> Result<u64, CniError> {
        if let Some(memory) = self.memory.filter(|_| ensure_entry) {
            let _ = memory.expect_wire_answers(ip);
        }
        let sent = monotonic_ns();
        self.send(&self.probe_frame(ip))
            .map_err(|error| probe_error(ip, error))?;
        if let Some(memory) = self.memory {
            match memory.record_wire_probe(ip, sent) {
                Err(error) if must_record => return Err(error.into()),
                _ => {}
            }
        }
        Ok(sent)
    }

    /// Checks each of `ips` (the addresses of one lease) before it is handed out. The
    /// addresses that must wait for their probes wait together: each probe and each look
    /// at the memory at its own time, so that a dual-stack lease waits no longer than one
    /// address.
    pub fn check(&self, ips: impl IntoIterator<Item = IpAddr>, wait: Duration) -> Result<Outcome, CniError> {
        let mut late = Vec::new();
        let mut waiting = Vec::new();
        for ip in ips {
            match self.start_check(ip, wait)? {
                Step::Done(Checked::Late(check)) => late.push(check),
                Step::Done(Checked::InUse(mac)) => return Ok(self.in_use(ip, mac)),
                Step::Wait(waits) => waiting.push(waits),
            }
        }
        while let Some(next) = (0..waiting.len()).min_by_key(|&i| waiting[i].next_ns()) {
            let waits = &mut waiting[next];
            sleep_until(waits.next_ns());
            if waits.second_probe_ns.take().is_some() {
                let sent = self.probe_recorded(waits.ip, false, true)?;
                waits.check_ns = waits.check_ns.max(sent.saturating_add(ns(wait / 2)));
                continue;
            }
            let Waiting { ip, since_ns, .. } = waiting.swap_remove(next);
            let Some(memory) = self.memory else {
                continue;
            };
            let claim = self
                .claim(memory, ip)?
                .filter(|claim| claim.seen_ns >= since_ns)
                .map(|claim| claim.mac);
            match Checked::after(claim, ip, since_ns) {
                Checked::Late(check) => late.push(check),
                Checked::InUse(mac) => return Ok(self.in_use(ip, mac)),
            }
        }
        Ok(Outcome::Free(late))
    }

    fn in_use(&self, ip: IpAddr, mac: [u8; 6]) -> Outcome {
        if let Some(memory) = self.memory {
            let _ = memory.forget_wire_probe(ip);
        }
        Outcome::InUse { ip, mac }
    }

    /// What the memory says of `ip`, and what is left to wait for. An address the memory
    /// knows nothing of is probed as RFC 5227 and RFC 4862 have it: two probes within
    /// `wait`, then whether anybody claimed it since the first; through the datapath and its
    /// memory when both work (the memory is asked again at the end of ADD), over the socket
    /// (which reads the answers itself, and waits here) otherwise.
    fn start_check(&self, ip: IpAddr, wait: Duration) -> Result<Step, CniError> {
        let half = ns(wait / 2);
        // The memory, when it can answer for this family: a node whose pins predate its maps
        // has none, and the socket probes and waits, as without a datapath.
        let mut answering = None;
        if let Some(memory) = self.memory {
            let remembered = memory
                .wire_probe(ip)
                .and_then(|probe| Ok((probe, self.claim(memory, ip)?)));
            if let Ok((probe, claim)) = remembered {
                answering = Some(memory);
                match judge(probe, claim, monotonic_ns(), wait) {
                    Judgement::Free { since_ns } => {
                        // One more, whose answer the end of ADD may still see.
                        self.probe(ip)?;
                        return Ok(Step::Done(Checked::after(None, ip, since_ns)));
                    }
                    Judgement::InUse { mac } => return Ok(Step::Done(Checked::InUse(mac))),
                    Judgement::Pending { since_ns, second_ns } => {
                        return Ok(Step::Wait(Waiting {
                            ip,
                            since_ns,
                            second_probe_ns: second_ns.is_none().then(|| since_ns.saturating_add(half)),
                            check_ns: since_ns
                                .saturating_add(ns(wait))
                                .max(second_ns.map_or(0, |second| second.saturating_add(half))),
                        }));
                    }
                    Judgement::Unknown => {}
                }
            }
        }
        let frame = self.probe_frame(ip);
        if let Some(memory) = answering {
            // Before the probe: its answer can come back before a record made after it.
            let _ = memory.expect_wire_answers(ip);
        }
        let probed_at = monotonic_ns();
        if let Some(memory) = answering
            && self.send(&frame).map_err(|error| probe_error(ip, error))?
        {
            let _ = memory.record_wire_probe(ip, probed_at);
            return Ok(Step::Wait(Waiting {
                ip,
                since_ns: probed_at,
                second_probe_ns: Some(probed_at.saturating_add(half)),
                check_ns: probed_at.saturating_add(ns(wait)),
            }));
        }
        let answer = self
            .probing_socket(ip)
            .and_then(|socket| socket.probe(&frame, ip, wait))
            .map_err(|error| probe_error(ip, error))?;
        // With a datapath that could not send (pins of before the inject program), its
        // memory of claims is still asked at the end of ADD (without one, nothing is).
        if let Some(memory) = self.memory {
            let _ = memory.record_wire_probe(ip, probed_at);
        }
        Ok(Step::Done(Checked::after(answer, ip, probed_at)))
    }

    /// The end of ADD: a claim of a checked address since its first probe, by another MAC
    /// than the pod's, is a conflict (an answer that came after the check, or a holder that
    /// spoke up while the pod was plugged in). Then every address of the pod is forgotten
    /// by the memory: a later claim of it is the pod's conflict.
    pub fn finish(
        &self,
        late: &[LateCheck],
        pod_mac: [u8; 6],
        ips: impl IntoIterator<Item = IpAddr>,
    ) -> Result<(), (IpAddr, [u8; 6])> {
        let Some(memory) = self.memory else {
            return Ok(());
        };
        for check in late {
            if let Ok(Some(claim)) = self.claim(memory, check.ip)
                && claim.seen_ns >= check.since_ns
                && claim.mac != pod_mac
            {
                let _ = memory.forget_wire_probe(check.ip);
                return Err((check.ip, claim.mac));
            }
        }
        for ip in ips {
            let _ = memory.forget_wire_probe(ip);
            if let Err(error) = memory.forget_wire_claim(ip) {
                log::debug!("failed to forget the claims of {ip}: {error}");
            }
        }
        Ok(())
    }
}

/// Whether an entry of `probes` was named by the latest ADD that named any (the addresses
/// the next ADDs hand out; one stamp per ADD, see [`Wire::probe_ahead`]).
pub fn of_latest_add(probes: &[(IpAddr, ArpProbe)]) -> impl Fn(&ArpProbe) -> bool {
    let latest = probes.iter().map(|(_, probe)| probe.wanted_ns).max().unwrap_or(0);
    move |probe| latest != 0 && probe.wanted_ns == latest
}

/// The agent's upkeep of `arp_probes` at `now_ns`: the addresses to forget (taken by a pod,
/// or named by an earlier ADD only and stale) and the ones to probe again (named by the
/// latest ADD and probed [`REPROBE_AFTER`] ago or more). Only the latest ADD's next
/// addresses are kept fresh, so an idle node sends a bounded number of probes.
pub fn upkeep(
    probes: &[(IpAddr, ArpProbe)],
    pods: &std::collections::HashSet<IpAddr>,
    now_ns: u64,
) -> (Vec<IpAddr>, Vec<IpAddr>) {
    let of_latest_add = of_latest_add(probes);
    let age = |at: u64| now_ns.saturating_sub(at);
    let mut forget = Vec::new();
    let mut reprobe = Vec::new();
    for &(ip, probe) in probes {
        let wanted = of_latest_add(&probe);
        if pods.contains(&ip) || (!wanted && age(probe.last_ns) >= ns(PROBE_FRESH)) {
            forget.push(ip);
        } else if wanted && age(probe.last_ns) >= ns(REPROBE_AFTER) {
            reprobe.push(ip);
        }
    }
    (forget, reprobe)
}

/// Sleeps until CLOCK_MONOTONIC reads `at_ns` (not at all if it is past).
fn sleep_until(at_ns: u64) {
    std::thread::sleep(Duration::from_nanos(at_ns.saturating_sub(monotonic_ns())));
}

enum Checked {
    Late(LateCheck),
    InUse([u8; 6]),
}

/// Where the check of one address stands after the memory was asked.
enum Step {
    Done(Checked),
    Wait(Waiting),
}

/// An address whose check waits: for its second probe (if it still needs one), then until
/// `check_ns`, when the memory says whether anybody claimed it since `since_ns`.
struct Waiting {
    ip: IpAddr,
    since_ns: u64,
    second_probe_ns: Option<u64>,
    check_ns: u64,
}

impl Waiting {
    fn next_ns(&self) -> u64 {
        self.second_probe_ns.unwrap_or(self.check_ns)
    }
}

impl Checked {
    /// `ip`, first probed at `since_ns`, after its check: in use by whoever claimed it, or
    /// to be asked again at the end of ADD.
    fn after(claimed_by: Option<[u8; 6]>, ip: IpAddr, since_ns: u64) -> Self {
        match claimed_by {
            Some(mac) => Checked::InUse(mac),
            None => Checked::Late(LateCheck { ip, since_ns }),
        }
    }
}

/// What IPAM made of an address found in use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Marked {
    /// Marked as conflicting: a retried ADD takes another.
    Yes,
    /// Requested, or another IPAM plugin's: nothing to mark.
    NotReallocatable,
    /// Writing the marker failed (logged).
    Failed,
}

/// The error of an ADD whose address was claimed on the wire while it ran.
pub fn late_conflict(ip: IpAddr, mac: [u8; 6], marked: Marked) -> CniError {
    let then = match marked {
        Marked::Yes => "it is marked as conflicting, a retried ADD takes another",
        Marked::NotReallocatable => {
            "the address was requested or comes from another IPAM plugin: free it on the network or ask for another"
        }
        Marked::Failed => "marking it as conflicting failed (see the log): a retried ADD may take it again",
    };
    CniError::new(
        code::ADDRESS_CONFLICT,
        format!(
            "address {ip} was claimed on the wire by {} while the pod was being added: {then}",
            Mac(mac)
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;
    const WAIT: Duration = Duration::from_millis(100);
    const NOW: u64 = 3_600_000 * MS;

    fn probe(last_ago_ms: u64, previous_ago_ms: Option<u64>) -> Option<ArpProbe> {
        Some(ArpProbe {
            last_ns: NOW - last_ago_ms * MS,
            previous_ns: previous_ago_ms.map_or(0, |ago| NOW - ago * MS),
            wanted_ns: 0,
        })
    }

    fn claim(ago_ms: u64) -> Option<ArpClaim> {
        Some(ArpClaim {
            seen_ns: NOW - ago_ms * MS,
            mac: [2, 0, 0, 0, 0, 7],
            op: 2,
        })
    }

    #[test]
    fn the_agent_keeps_only_the_latest_adds_addresses_fresh() {
        let entry = |last: u8, last_ago_s: u64, wanted: u64| {
            (
                IpAddr::from([10, 10, 1, last]),
                ArpProbe {
                    last_ns: NOW - last_ago_s * 1000 * MS,
                    previous_ns: 0,
                    wanted_ns: wanted,
                },
            )
        };
        let probes = [
            entry(1, 90, 7),  // the latest ADD's, a minute and a half old: again
            entry(2, 10, 7),  // the latest ADD's, fresh: left
            entry(3, 400, 5), // an earlier ADD's, stale: forgotten
            entry(4, 90, 5),  // an earlier ADD's, not stale yet: left, not probed
            entry(5, 90, 7),  // the latest ADD's, but a pod has it now: forgotten
        ];
        let pods = [IpAddr::from([10, 10, 1, 5])].into_iter().collect();
        let (forget, reprobe) = upkeep(&probes, &pods, NOW);
        assert_eq!(
            forget,
            [IpAddr::from([10, 10, 1, 3]), IpAddr::from([10, 10, 1, 5])]
        );
        assert_eq!(reprobe, [IpAddr::from([10, 10, 1, 1])]);
        assert_eq!(upkeep(&[], &pods, NOW), (vec![], vec![]));
    }

    #[test]
    fn an_address_probed_twice_long_enough_ago_and_unclaimed_is_free() {
        assert_eq!(
            judge(probe(60, Some(150)), None, NOW, WAIT),
            Judgement::Free {
                since_ns: NOW - 150 * MS
            }
        );
        // Claims since the older probe count, whatever order the two are stored in.
        assert_eq!(
            judge(probe(150, Some(60)), None, NOW, WAIT),
            Judgement::Free {
                since_ns: NOW - 150 * MS
            }
        );
    }

    #[test]
    fn one_probe_or_a_second_too_recent_is_pending() {
        // One probe, however old, is not enough: the second is sent and waited for.
        assert_eq!(
            judge(probe(150, None), None, NOW, WAIT),
            Judgement::Pending {
                since_ns: NOW - 150 * MS,
                second_ns: None
            }
        );
        // A second probe that has had less than half the probe time to be answered.
        assert_eq!(
            judge(probe(10, Some(70_000)), None, NOW, WAIT),
            Judgement::Pending {
                since_ns: NOW - 70_000 * MS,
                second_ns: Some(NOW - 10 * MS)
            }
        );
        // Two probes at once (two ADDs probing ahead together) are one.
        assert_eq!(
            judge(probe(149, Some(150)), None, NOW, WAIT),
            Judgement::Pending {
                since_ns: NOW - 150 * MS,
                second_ns: None
            }
        );
        assert!(wants_probe_ahead(
            probe(149, Some(150)).expect("probe"),
            NOW,
            WAIT
        ));
        // The first probe too recent.
        assert_eq!(
            judge(probe(40, Some(90)), None, NOW, WAIT),
            Judgement::Pending {
                since_ns: NOW - 90 * MS,
                second_ns: Some(NOW - 40 * MS)
            }
        );
    }

    #[test]
    fn addresses_ahead_are_probed_when_unprobed_once_and_old_enough_or_stale() {
        let at = |probe: Option<ArpProbe>| wants_probe_ahead(probe.unwrap_or_default(), NOW, WAIT);
        assert!(at(None));
        assert!(
            !at(probe(20, None)),
            "the second probe only after half the probe time"
        );
        assert!(at(probe(60, None)));
        assert!(!at(probe(60, Some(150))), "probed twice lately");
        let reprobe = u64::try_from(REPROBE_AFTER.as_millis()).expect("ms");
        assert!(at(probe(reprobe, Some(reprobe + 100))));
        let stale = u64::try_from(PROBE_FRESH.as_millis()).expect("ms") + 1;
        assert!(at(probe(stale, None)), "a stale probe is no probe");
    }

    #[test]
    fn a_claim_after_a_probe_is_in_use() {
        assert_eq!(
            judge(probe(60, Some(150)), claim(149), NOW, WAIT),
            Judgement::InUse {
                mac: [2, 0, 0, 0, 0, 7]
            }
        );
        // After the older of two probes, even before the newer one.
        assert!(matches!(
            judge(probe(10, Some(70_000)), claim(60_000), NOW, WAIT),
            Judgement::InUse { .. }
        ));
        // Also while the probe is still pending.
        assert!(matches!(
            judge(probe(10, None), claim(1), NOW, WAIT),
            Judgement::InUse { .. }
        ));
    }

    #[test]
    fn too_old_never_or_claimed_before_the_probe_is_not_free() {
        let stale = u64::try_from(PROBE_FRESH.as_millis()).expect("ms") + 1;
        assert_eq!(judge(probe(stale, None), None, NOW, WAIT), Judgement::Unknown);
        assert_eq!(judge(None, None, NOW, WAIT), Judgement::Unknown);
        // Claimed a minute before the probe: the claimer may have gone, or may answer slowly.
        assert_eq!(
            judge(probe(150, None), claim(60_150), NOW, WAIT),
            Judgement::Unknown
        );
        // A claim older than the memory says nothing.
        let forgotten = u64::try_from(CLAIM_MEMORY.as_millis()).expect("ms") + 1;
        assert!(matches!(
            judge(probe(60, Some(150)), claim(forgotten), NOW, WAIT),
            Judgement::Free { .. }
        ));
        // A probe "in the future" (another clock) is no probe.
        let future = Some(ArpProbe {
            last_ns: NOW + MS,
            previous_ns: 0,
            wanted_ns: 0,
        });
        assert_eq!(judge(future, None, NOW, WAIT), Judgement::Unknown);
    }
}
