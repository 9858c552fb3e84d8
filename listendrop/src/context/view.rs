//! The inventory seen by listener: each [`ListenerId`] with the sockets behind it — one for
//! a plain socket, every member of an SO_REUSEPORT group otherwise. Members are kept apart
//! (each has its own accept queue and owner); what is shown for the listener as a whole
//! says which member it comes from.

use std::{collections::BTreeMap, sync::Arc};

use crate::{
    inventory::{self, diagnosis::Facts, owners::Owner, sysctls::Sysctls, Listener, Snapshot},
    listener::{ListenerId, Netns},
};

/// One listener and its sockets.
#[derive(Clone, Debug)]
pub struct Group {
    /// The sockets (SO_REUSEPORT members), in the order sock_diag listed them; never empty.
    pub members: Vec<Listener>,
    /// Its namespace's sysctls.
    pub sysctls: Sysctls,
}

impl Group {
    /// The member whose accept queue is fullest (highest length/limit; then the longest,
    /// then the first): the one the queue gauges describe, since a saturated member drops
    /// handshakes however idle the others are.
    pub fn fullest(&self) -> &Listener {
        let mut best = &self.members[0];
        for m in &self.members[1..] {
            if fuller(m, best) {
                best = m;
            }
        }
        best
    }

    /// The owner shown for the listener as a whole: the lowest pid among the members'
    /// owners (a forking server's parent), so that there is one per listener.
    pub fn owner(&self) -> Option<&Owner> {
        self.members
            .iter()
            .filter_map(|m| m.owner.as_ref())
            .min_by_key(|o| o.pid)
    }

    /// The member with socket `cookie`, if it is one of them.
    pub fn member(&self, cookie: u64) -> Option<&Listener> {
        if cookie == 0 {
            return None;
        }
        self.members.iter().find(|m| m.socket.cookie == cookie)
    }

    /// Half-open requests of the listener (sock_diag cannot tell members apart: each
    /// reports the group's).
    pub fn syn_queue(&self) -> u32 {
        self.members
            .iter()
            .map(|m| m.socket.syn_recv)
            .max()
            .unwrap_or(0)
    }

    /// `sk_drops` summed over members (every drop, reasons unknown).
    pub fn sk_drops(&self) -> u64 {
        self.members
            .iter()
            .map(|m| u64::from(m.socket.sk_drops.unwrap_or(0)))
            .sum()
    }

    /// The socket cookies of the members.
    pub fn cookies(&self) -> impl Iterator<Item = u64> + '_ {
        self.members.iter().map(|m| m.socket.cookie)
    }

    /// The diagnosis inputs of the fullest member (drops since the last pass summed over
    /// all members, the group's SYN queue).
    pub fn facts(&self) -> Facts {
        let mut facts = self.fullest().facts(&self.sysctls);
        facts.sk_drops = self.members.iter().map(|m| m.new_sk_drops).sum();
        facts.syn_recv = self.syn_queue();
        facts
    }
}

/// Whether member `a`'s accept queue is fuller than `b`'s.
fn fuller(a: &Listener, b: &Listener) -> bool {
    let (a, b) = (&a.socket, &b.socket);
    // a.len / a.limit > b.len / b.limit, without division (a limit of 0 holds one).
    let lhs = u64::from(a.accept_queue_len) * u64::from(b.accept_queue_limit.max(1));
    let rhs = u64::from(b.accept_queue_len) * u64::from(a.accept_queue_limit.max(1));
    lhs > rhs || (lhs == rhs && a.accept_queue_len > b.accept_queue_len)
}

/// The latest inventory by listener.
#[derive(Clone, Debug, Default)]
pub struct View {
    /// The inventory it was built from.
    pub inventory: Arc<Snapshot>,
    /// Every listener of every namespace read.
    pub listeners: BTreeMap<ListenerId, Group>,
}

impl View {
    /// Groups the sockets of `inventory` by listener.
    pub fn new(inventory: Arc<Snapshot>) -> Self {
        let mut listeners: BTreeMap<ListenerId, Group> = BTreeMap::new();
        for ns in &inventory.namespaces {
            let netns = Netns(ns.namespace.inode);
            for listener in &ns.listeners {
                listeners
                    .entry(listener.socket.id(netns))
                    .or_insert_with(|| Group {
                        members: Vec::new(),
                        sysctls: ns.sysctls,
                    })
                    .members
                    .push(listener.clone());
            }
        }
        Self {
            inventory,
            listeners,
        }
    }

    /// The owner of the socket that saw an event: the member with `cookie`, else the
    /// listener's owner.
    pub fn owner(&self, id: &ListenerId, cookie: u64) -> Option<&Owner> {
        let group = self.listeners.get(id)?;
        group
            .member(cookie)
            .and_then(|m| m.owner.as_ref())
            .or_else(|| group.owner())
    }

    /// What is known of a listener for a diagnosis: its own facts, else (a listener the
    /// inventory has not seen yet) its namespace's sysctls.
    pub fn facts(&self, id: &ListenerId) -> Option<Facts> {
        if let Some(group) = self.listeners.get(id) {
            return Some(group.facts());
        }
        self.inventory
            .namespace(id.netns.0)
            .map(|n| inventory::namespace_facts(&n.sysctls))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        inventory::{counters::KernelCounters, namespaces::Namespace, NamespaceReport},
        listener::Family,
    };

    fn member(cookie: u64, len: u32, limit: u32, pid: Option<i32>) -> Listener {
        Listener {
            socket: crate::inventory::sockdiag::ListenSocket {
                family: Family::Ipv4,
                addr: "0.0.0.0".parse().unwrap(),
                port: 8080,
                inode: cookie,
                cookie,
                accept_queue_len: len,
                accept_queue_limit: limit,
                sk_drops: Some(u32::try_from(cookie).unwrap()),
                v6only: false,
                syn_recv: 3,
                syn_recv_shared_by: 2,
            },
            owner: pid.map(|pid| Owner {
                pid,
                comm: format!("worker{pid}"),
                cgroup: String::new(),
                holders: 1,
                container: None,
            }),
            owner_busy: None,
            new_sk_drops: cookie,
            diagnosis: Vec::new(),
        }
    }

    fn view(members: Vec<Listener>) -> View {
        View::new(Arc::new(Snapshot {
            namespaces: vec![NamespaceReport {
                namespace: Namespace {
                    inode: 7,
                    path: "/proc/1/ns/net".into(),
                    names: Vec::new(),
                    pid: Some(1),
                    host: false,
                },
                sysctls: Sysctls {
                    somaxconn: 4096,
                    ..Sysctls::default()
                },
                counters: KernelCounters::default(),
                listeners: members,
                unattributed_syn_recv: 0,
            }],
            skipped: Vec::new(),
        }))
    }

    #[test]
    fn a_saturated_member_is_the_one_shown_however_idle_the_others() {
        // One worker stopped: its member at 17/16, the other at 0/16 (seen with nginx).
        let v = view(vec![
            member(1, 0, 16, Some(200)),
            member(2, 17, 16, Some(300)),
        ]);
        assert_eq!(v.listeners.len(), 1, "one listener, two members");
        let group = v.listeners.values().next().unwrap();
        let full = group.fullest();
        assert_eq!(
            (full.socket.accept_queue_len, full.socket.accept_queue_limit),
            (17, 16)
        );
        assert_eq!(group.members.len(), 2);
        assert_eq!(group.owner().unwrap().pid, 200, "one owner per listener");
        assert_eq!(group.sk_drops(), 3);
        assert_eq!(group.syn_queue(), 3, "shared, not summed");
        let facts = group.facts();
        assert_eq!((facts.accept_queue_len, facts.accept_queue_limit), (17, 16));
        assert_eq!(facts.sk_drops, 3);
    }

    #[test]
    fn fullest_is_by_ratio_then_length() {
        let v = view(vec![member(1, 8, 64, None), member(2, 5, 8, None)]);
        assert_eq!(
            v.listeners.values().next().unwrap().fullest().socket.cookie,
            2
        );
        let v = view(vec![member(1, 4, 8, None), member(2, 8, 16, None)]);
        assert_eq!(
            v.listeners.values().next().unwrap().fullest().socket.cookie,
            2
        );
        let v = view(vec![member(1, 1, 0, None), member(2, 3, 4, None)]);
        assert_eq!(
            v.listeners.values().next().unwrap().fullest().socket.cookie,
            1,
            "listen(0) holds one: 1/0 is full"
        );
    }

    #[test]
    fn an_event_names_the_owner_of_the_member_that_saw_it() {
        let v = view(vec![
            member(1, 0, 16, Some(200)),
            member(2, 17, 16, Some(300)),
        ]);
        let id = *v.listeners.keys().next().unwrap();
        assert_eq!(v.owner(&id, 2).unwrap().pid, 300);
        assert_eq!(v.owner(&id, 1).unwrap().pid, 200);
        assert_eq!(
            v.owner(&id, 0).unwrap().pid,
            200,
            "cookie unknown: the group's"
        );
        assert_eq!(v.owner(&id, 99).unwrap().pid, 200);
        let other = ListenerId { port: 1, ..id };
        assert!(v.owner(&other, 2).is_none());
        assert_eq!(v.facts(&other).unwrap().somaxconn, 4096, "namespace facts");
    }
}
