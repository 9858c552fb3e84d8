//! Loads the eBPF object embedded in this binary and attaches, for each hook, the best
//! kind the running kernel allows: fentry/fexit, then kprobe/kretprobe, then tracepoint.
//! Dropping [`Probes`] detaches and unloads everything.

mod attach;
pub mod pin;

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use aya::{Ebpf, EbpfLoader};
use listendrop_common::{
    Reason, Settings, GLOBAL_OFFSETS, GLOBAL_SETTINGS, MAP_DROPS, MAP_EVENTS, MAP_HANDSHAKES,
    MAP_HIGH_WATER, MAP_RATE,
};

use attach::Attacher;
pub use attach::OwnedLink;

use crate::{btf::KernelBtf, layout::Layout};

/// The eBPF object, built by `build.rs` with aya-build and embedded at compile time.
static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/listendrop-ebpf"));

/// How a hook is attached, best first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, clap::ValueEnum)]
pub enum Kind {
    /// fentry/fexit (BPF trampolines, 5.5+): the cheapest.
    Fentry,
    /// kprobe/kretprobe (CONFIG_KPROBES).
    Kprobe,
    /// Tracepoints: stable, but only some drops have one.
    Tracepoint,
}

impl Kind {
    /// The `kind` label.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Fentry => "fentry",
            Self::Kprobe => "kprobe",
            Self::Tracepoint => "tracepoint",
        }
    }
}

/// `--probe-kind`: let listendrop choose, or force one kind for testing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KindChoice {
    /// The best kind each hook allows on this kernel.
    #[default]
    Auto,
    /// Only fentry/fexit (the SYN-ACK tracepoint is still used: it has no other kind).
    Fentry,
    /// Only kprobe/kretprobe (the SYN-ACK tracepoint is still used).
    Kprobe,
    /// Only tracepoints: ACK-time overflows via skb:kfree_skb (6.15+), no SYN-time drops.
    Tracepoint,
}

impl KindChoice {
    fn allows(self, kind: Kind) -> bool {
        match self {
            Self::Auto => true,
            Self::Fentry => kind == Kind::Fentry,
            Self::Kprobe => kind == Kind::Kprobe,
            Self::Tracepoint => kind == Kind::Tracepoint,
        }
    }
}

/// Which drops a hook reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Group {
    /// SYN-time drops and syncookies (`tcp_conn_request`).
    Syn,
    /// ACK-time drops (`tcp_v4/v6_syn_recv_sock`, or `skb:kfree_skb`).
    Ack,
    /// SYN-ACK retransmits (`tcp:tcp_retransmit_synack`).
    Synack,
}

/// One attach attempt and its outcome.
#[derive(Clone, Debug)]
pub struct Hook {
    /// What it reports.
    pub group: Group,
    /// The kernel function or tracepoint, e.g. `tcp_conn_request`, `skb:kfree_skb`.
    pub probe: &'static str,
    /// How.
    pub kind: Kind,
    /// `Ok` when attached, otherwise why not.
    pub status: Result<(), String>,
}

/// Map sizes and program settings chosen by the user.
#[derive(Clone, Copy, Debug)]
pub struct Sizes {
    /// Entries of the per-listener counter map (and of the rate-limit map).
    pub max_listener_keys: u32,
    /// Handshakes remembered to tell new drops from retransmits.
    pub max_handshakes: u32,
    /// Bytes of the event ring buffer (power of two, page multiple).
    pub events_bytes: u32,
}

/// Where to pin (`None`: nothing is pinned, everything detaches at exit).
#[derive(Clone, Debug)]
pub struct Pinning {
    /// The pin directory in bpffs.
    pub dir: PathBuf,
}

/// Loaded programs and their maps; attached hooks stay attached while this lives (and,
/// when pinned, after it).
pub struct Probes {
    /// Every attach attempt, in order (only the attached hooks when resumed).
    pub hooks: Vec<Hook>,
    /// Whether the programs were adopted from a previous run's pins.
    pub resumed: bool,
    /// Where the hooks and maps are pinned, if they are.
    pub pinned: Option<PathBuf>,
    /// Links not pinned (dropped first: detaching before unloading).
    _links: Vec<OwnedLink>,
    /// The loaded object, when loaded (not when resumed).
    ebpf: Option<Ebpf>,
    /// Pin directory of this run.
    pins: Option<pin::PinDir>,
}

impl Probes {
    /// Loads the programs with `layout` and `settings`, and attaches the hooks `choice`
    /// and the kernel allow; with `pinning`, first adopts what a previous run with the
    /// same fingerprint left pinned.
    pub fn load(
        layout: &Layout,
        btf: &KernelBtf,
        btf_path: &Path,
        settings: &Settings,
        sizes: Sizes,
        choice: KindChoice,
        pinning: Option<&Pinning>,
    ) -> anyhow::Result<Self> {
        let pins = pinning
            .map(|p| {
                let sizes_bytes = [
                    sizes.max_listener_keys.to_le_bytes(),
                    sizes.max_handshakes.to_le_bytes(),
                    sizes.events_bytes.to_le_bytes(),
                    (choice as u32).to_le_bytes(),
                ]
                .concat();
                let fingerprint = pin::fingerprint(&[
                    EBPF_OBJECT,
                    pin::bytes_of(&layout.offsets),
                    pin::bytes_of(settings),
                    &sizes_bytes,
                ]);
                tracing::debug!("pin fingerprint {fingerprint}");
                pin::PinDir::new(&p.dir, &fingerprint)
            })
            .transpose()?;
        let pinned = pinning.map(|p| p.dir.clone());
        if let Some((hooks, links)) = pins.as_ref().and_then(pin::PinDir::adoptable) {
            if let Some(pins) = &pins {
                pins.remove_others();
            }
            return Ok(Self {
                hooks,
                resumed: true,
                pinned,
                _links: links,
                ebpf: None,
                pins,
            });
        }
        if let Some(pins) = &pins {
            pins.clear_links();
        }

        let mut loader = EbpfLoader::new();
        // The programs carry no CO-RE relocations (offsets come in OFFSETS), so aya needs
        // no kernel BTF of its own.
        loader
            .btf(None)
            .override_global(GLOBAL_OFFSETS, &layout.offsets, true)
            .override_global(GLOBAL_SETTINGS, settings, true)
            .map_max_entries(MAP_DROPS, sizes.max_listener_keys)
            .map_max_entries(MAP_RATE, sizes.max_listener_keys)
            .map_max_entries(MAP_HIGH_WATER, sizes.max_listener_keys)
            .map_max_entries(MAP_HANDSHAKES, sizes.max_handshakes)
            .map_max_entries(MAP_EVENTS, sizes.events_bytes);
        if let Some(pins) = &pins {
            for name in pin::PINNED_MAPS {
                loader.map_pin_path(name, pins.map(name));
            }
        }
        let mut ebpf = loader
            .load(EBPF_OBJECT)
            .context("loading the eBPF programs into the kernel failed")?;
        let mut attacher = Attacher::new(&mut ebpf, layout, btf, btf_path, choice);
        attacher.syn();
        attacher.ack();
        attacher.synack();
        let (mut hooks, links) = attacher.finish();
        let links = match &pins {
            Some(pins) => {
                let (held, failed) = pins.pin_links(links);
                for (probe, kind, why) in failed {
                    for hook in hooks
                        .iter_mut()
                        .filter(|h| h.probe == probe && h.kind == kind)
                    {
                        hook.status = Err(why.clone());
                    }
                }
                pins.remove_others();
                held
            }
            None => links.into_iter().map(|l| l.link).collect(),
        };
        Ok(Self {
            hooks,
            resumed: false,
            pinned,
            _links: links,
            ebpf: Some(ebpf),
            pins,
        })
    }

    /// Takes map `name` (from the loaded object, or from its pin when resumed).
    pub fn take_map(&mut self, name: &str) -> anyhow::Result<aya::maps::Map> {
        if let Some(ebpf) = &mut self.ebpf {
            return ebpf
                .take_map(name)
                .with_context(|| format!("map {name} missing from the eBPF object"));
        }
        let pins = self.pins.as_ref().context("no loaded object and no pins")?;
        let data = aya::maps::MapData::from_pin(pins.map(name))
            .with_context(|| format!("opening pinned map {}", pins.map(name).display()))?;
        aya::maps::Map::from_map_data(data).with_context(|| format!("pinned map {name}"))
    }

    /// Whether each class of event is observable with the hooks attached.
    pub fn coverage(&self) -> Vec<(Reason, bool)> {
        coverage(&self.hooks)
    }
}

fn attached(hooks: &[Hook], group: Group) -> Option<Kind> {
    hooks
        .iter()
        .find(|h| h.group == group && h.status.is_ok())
        .map(|h| h.kind)
}

/// Whether each class of event is observable with `hooks`.
pub fn coverage(hooks: &[Hook]) -> Vec<(Reason, bool)> {
    let syn = attached(hooks, Group::Syn).is_some();
    let ack = attached(hooks, Group::Ack);
    let ack_probe = matches!(ack, Some(Kind::Fentry | Kind::Kprobe));
    let synack = attached(hooks, Group::Synack).is_some();
    Reason::ALL
        .iter()
        .map(|&reason| {
            let covered = match reason {
                Reason::AckAcceptQueueFull | Reason::OverflowReset => ack.is_some(),
                Reason::CookieAckAcceptQueueFull => ack_probe,
                Reason::SynAcceptQueueFull
                | Reason::SynQueueFull
                | Reason::SynBacklogPressure
                | Reason::SyncookieSent => syn,
                Reason::Other => syn && ack_probe,
                Reason::SynackRetransmit => synack,
            };
            (reason, covered)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(group: Group, kind: Kind, ok: bool) -> Hook {
        Hook {
            group,
            probe: "x",
            kind,
            status: if ok { Ok(()) } else { Err("no".into()) },
        }
    }

    fn covered(hooks: &[Hook], reason: Reason) -> bool {
        coverage(hooks)
            .into_iter()
            .find(|(r, _)| *r == reason)
            .unwrap()
            .1
    }

    #[test]
    fn tracepoint_only_host_covers_ack_overflows_and_synacks_only() {
        let hooks = [
            hook(Group::Syn, Kind::Fentry, false),
            hook(Group::Syn, Kind::Kprobe, false),
            hook(Group::Ack, Kind::Fentry, false),
            hook(Group::Ack, Kind::Kprobe, false),
            hook(Group::Ack, Kind::Tracepoint, true),
            hook(Group::Synack, Kind::Tracepoint, true),
        ];
        assert!(covered(&hooks, Reason::AckAcceptQueueFull));
        assert!(covered(&hooks, Reason::OverflowReset));
        assert!(covered(&hooks, Reason::SynackRetransmit));
        for reason in [
            Reason::SynAcceptQueueFull,
            Reason::SynQueueFull,
            Reason::SynBacklogPressure,
            Reason::SyncookieSent,
            Reason::CookieAckAcceptQueueFull,
            Reason::Other,
        ] {
            assert!(!covered(&hooks, reason), "{reason:?}");
        }
    }

    #[test]
    fn probes_cover_everything() {
        let hooks = [
            hook(Group::Syn, Kind::Kprobe, true),
            hook(Group::Ack, Kind::Fentry, true),
            hook(Group::Synack, Kind::Tracepoint, true),
        ];
        assert!(coverage(&hooks).iter().all(|(_, c)| *c));
        assert_eq!(attached(&hooks, Group::Ack), Some(Kind::Fentry));
    }

    #[test]
    fn forced_kinds() {
        assert!(KindChoice::Auto.allows(Kind::Kprobe));
        assert!(KindChoice::Kprobe.allows(Kind::Kprobe));
        assert!(!KindChoice::Kprobe.allows(Kind::Fentry));
        assert!(!KindChoice::Tracepoint.allows(Kind::Kprobe));
    }
}
