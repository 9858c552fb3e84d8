//! Loads the eBPF object embedded in this binary and attaches each hook of the
//! [table](table::HOOKS) with the best way the running kernel allows. Dropping [`Probes`]
//! detaches and unloads everything that is not pinned.

mod attach;
mod fields;
mod info;
pub mod pin;
pub mod programs;
pub mod table;

use std::path::PathBuf;

use aya::{Ebpf, EbpfLoader};
use listendrop_common::{
    Reason, Settings, GLOBAL_OFFSETS, GLOBAL_SETTINGS, MAP_DROPS, MAP_EVENTS, MAP_HANDSHAKES,
    MAP_HIGH_WATER,
};

use attach::Attacher;
pub use attach::OwnedLink;
pub use table::{Group, HookSpec, Kind};

use crate::layout::Layout;

/// The eBPF object, built by `build.rs` with aya-build and embedded at compile time.
static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/listendrop-ebpf"));

/// Why the programs could not be loaded or their maps opened.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The kernel refused the object (its maps, or a program at load).
    #[error("loading the eBPF programs into the kernel failed: {0}")]
    Load(#[from] aya::EbpfError),
    /// A map is missing from the object (a build mismatch).
    #[error("map {0} is missing from the eBPF object")]
    MissingMap(String),
    /// A pinned map could not be opened.
    #[error("opening pinned map {path}: {source}")]
    PinnedMap {
        /// The pin.
        path: PathBuf,
        /// What aya said.
        source: aya::maps::MapError,
    },
    /// The pin directory could not be used.
    #[error(transparent)]
    Pin(#[from] pin::PinError),
    /// The object's field loads could not be patched for this kernel.
    #[error(transparent)]
    Fields(#[from] fields::FieldError),
}

/// `--probe-kind`: let listendrop choose, or force one kind for testing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KindChoice {
    /// The best kind each hook allows on this kernel.
    #[default]
    Auto,
    /// Only fentry/fexit (SYN-ACK retransmits still use their tracepoint).
    Fentry,
    /// Only kprobe/kretprobe (SYN-ACK retransmits still use their tracepoint).
    Kprobe,
    /// Only BTF tracepoints: ACK-time drops through the freed ACK (6.15+), no SYN time.
    #[value(name = "tp_btf")]
    #[serde(rename = "tp_btf")]
    TpBtf,
    /// Only raw tracepoints: likewise.
    #[value(name = "raw_tp")]
    #[serde(rename = "raw_tp")]
    RawTp,
    /// Only classic tracepoints: likewise.
    Tracepoint,
}

impl KindChoice {
    /// The kind forced, if one is.
    pub const fn forced(self) -> Option<Kind> {
        match self {
            Self::Auto => None,
            Self::Fentry => Some(Kind::Fentry),
            Self::Kprobe => Some(Kind::Kprobe),
            Self::TpBtf => Some(Kind::TpBtf),
            Self::RawTp => Some(Kind::RawTp),
            Self::Tracepoint => Some(Kind::Tracepoint),
        }
    }

    /// The ways of `spec` this choice allows, best first. A forced function kind leaves a
    /// hook that only tracepoints can see (SYN-ACK retransmits) its own ways.
    pub fn ways(self, spec: &'static HookSpec) -> impl Iterator<Item = &'static table::Way> {
        let forced = self.forced();
        let only_tracepoints = spec.ways.iter().all(|w| w.kind.is_tracepoint());
        spec.ways.iter().filter(move |w| match forced {
            None => true,
            Some(k) if !k.is_tracepoint() && only_tracepoints => true,
            Some(k) => w.kind == k,
        })
    }
}

/// One attach attempt and its outcome.
#[derive(Clone, Debug)]
pub struct Hook {
    /// The hook.
    pub spec: &'static HookSpec,
    /// How.
    pub kind: Kind,
    /// `Ok` when attached, otherwise why not.
    pub status: Result<(), String>,
}

impl Hook {
    /// The kernel function or tracepoint, e.g. `tcp_conn_request`, `skb:kfree_skb`.
    pub const fn probe(&self) -> &'static str {
        self.spec.probe
    }
}

/// Map sizes and program settings chosen by the user.
#[derive(Clone, Copy, Debug)]
pub struct Sizes {
    /// Entries of the per-listener counter map (and of the high-water map).
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
    /// The ids of the programs behind the hooks (and of kprobe links).
    ids: Vec<programs::LinkIds>,
    /// Whether kprobe links report their misses (6.7+).
    kprobe_missed: bool,
}

impl Probes {
    /// Loads the programs with `layout` and `settings`, and attaches the hooks `choice`
    /// and the kernel allow; with `pinning`, first adopts what a previous run with the
    /// same fingerprint left pinned.
    pub fn load(
        layout: &Layout,
        settings: &Settings,
        sizes: Sizes,
        choice: KindChoice,
        pinning: Option<&Pinning>,
    ) -> Result<Self, ProbeError> {
        let pins = pinning
            .map(|p| pin::PinDir::new(&p.dir, &fingerprint(layout, settings, sizes, choice)))
            .transpose()?;
        let pinned = pinning.map(|p| p.dir.clone());
        let kprobe_missed = layout.version >= (6, 7);
        if let Some(adopted) = pins.as_ref().and_then(pin::PinDir::adoptable) {
            if let Some(pins) = &pins {
                pins.remove_others();
            }
            return Ok(Self {
                hooks: adopted.hooks,
                resumed: true,
                pinned,
                _links: adopted.links,
                ebpf: None,
                pins,
                ids: adopted.ids,
                kprobe_missed,
            });
        }
        if let Some(pins) = &pins {
            pins.clear_links();
        }
        let object = fields::patch(EBPF_OBJECT, &layout.offsets)?;
        tracing::debug!(
            "{} field loads and {} values patched for this kernel",
            object.loads,
            object.values
        );
        for (field, offset) in &object.too_far {
            tracing::warn!(
                "kernel layout field {field} is at byte {offset}, beyond what a load \
                 instruction reaches: the BTF-typed programs that read it will be refused \
                 and their hooks use the next kind"
            );
        }
        let mut ebpf = loader(layout, settings, sizes, pins.as_ref()).load(object.bytes())?;
        let (mut hooks, links) = Attacher::new(&mut ebpf, layout, choice).attach_all();
        let ids = links.iter().filter_map(|l| link_ids(&ebpf, l)).collect();
        let links = match &pins {
            Some(pins) => pin_all(pins, links, &mut hooks),
            None => links.into_iter().map(|l| l.link).collect(),
        };
        Ok(Self {
            hooks,
            resumed: false,
            pinned,
            _links: links,
            ebpf: Some(ebpf),
            pins,
            ids,
            kprobe_missed,
        })
    }

    /// The programs behind the hooks, opened for their statistics.
    pub fn programs(&self) -> programs::Programs {
        programs::Programs::open(&self.ids, self.kprobe_missed)
    }

    /// Takes map `name` (from the loaded object, or from its pin when resumed).
    pub fn take_map(&mut self, name: &str) -> Result<aya::maps::Map, ProbeError> {
        if let Some(ebpf) = &mut self.ebpf {
            return ebpf
                .take_map(name)
                .ok_or_else(|| ProbeError::MissingMap(name.to_owned()));
        }
        let Some(pins) = self.pins.as_ref() else {
            return Err(ProbeError::MissingMap(name.to_owned()));
        };
        let path = pins.map(name);
        aya::maps::MapData::from_pin(&path)
            .and_then(aya::maps::Map::from_map_data)
            .map_err(|source| ProbeError::PinnedMap { path, source })
    }

    /// The hooks attached (probe names).
    pub fn attached(&self) -> Vec<&'static str> {
        self.hooks
            .iter()
            .filter(|h| h.status.is_ok())
            .map(Hook::probe)
            .collect()
    }

    /// Whether each class of event is seen whole with the hooks attached.
    pub fn coverage(&self) -> Vec<(Reason, bool)> {
        table::coverage(&self.attached())
    }
}

/// A fingerprint of what the programs would be: object, layout, settings, sizes, choice.
/// Pins of the same fingerprint are adopted by a restart as they are.
fn fingerprint(layout: &Layout, settings: &Settings, sizes: Sizes, choice: KindChoice) -> String {
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
    fingerprint
}

/// The loader of our object for this kernel, these settings and sizes (and pins).
fn loader<'a>(
    layout: &'a Layout,
    settings: &'a Settings,
    sizes: Sizes,
    pins: Option<&pin::PinDir>,
) -> EbpfLoader<'a> {
    let mut loader = EbpfLoader::new();
    // The programs carry no CO-RE relocations (offsets come in OFFSETS), so aya needs no
    // kernel BTF of its own. (Stock aya 0.14 parses it in `new()` all the same, ~17 MB;
    // the vendored copy does not: vendor/aya/PATCHED.md.)
    loader
        .btf(None)
        .override_global(GLOBAL_OFFSETS, &layout.offsets, true)
        .override_global(GLOBAL_SETTINGS, settings, true)
        .map_max_entries(MAP_DROPS, sizes.max_listener_keys)
        .map_max_entries(MAP_HIGH_WATER, sizes.max_listener_keys)
        .map_max_entries(MAP_HANDSHAKES, sizes.max_handshakes)
        .map_max_entries(MAP_EVENTS, sizes.events_bytes);
    if let Some(pins) = pins {
        for name in pin::PINNED_MAPS {
            loader.map_pin_path(name, pins.map(name));
        }
    }
    loader
}

/// Pins every link in `pins` (see [`pin::PinDir::pin_links`]); a hook whose link could not
/// be pinned is marked failed in `hooks`. Returns the links to hold.
fn pin_all(
    pins: &pin::PinDir,
    links: Vec<attach::AttachedLink>,
    hooks: &mut [Hook],
) -> Vec<OwnedLink> {
    let (held, failed) = pins.pin_links(links);
    for (spec, kind, why) in failed {
        for hook in hooks
            .iter_mut()
            .filter(|h| std::ptr::eq(h.spec, spec) && h.kind == kind)
        {
            hook.status = Err(why.clone());
        }
    }
    pins.remove_others();
    held
}

/// The ids behind an attached link: from the BPF link, or (a perf event of a kernel
/// before 5.15 is none) the program's own, without a link whose misses could be read.
fn link_ids(ebpf: &Ebpf, link: &attach::AttachedLink) -> Option<programs::LinkIds> {
    let program = link.program_name();
    match &link.link {
        OwnedLink::Fd(fd) => {
            let info = fd.info().ok()?;
            Some(programs::LinkIds {
                program,
                program_id: info.program_id(),
                kprobe_link_id: (link.kind == Kind::Kprobe).then(|| info.id()),
            })
        }
        _ => Some(programs::LinkIds {
            program,
            program_id: ebpf.program(program)?.info().ok()?.id(),
            kprobe_link_id: None,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forced_kinds() {
        let conn = table::hook("tcp_conn_request").unwrap();
        let synack = table::hook("tcp:tcp_retransmit_synack").unwrap();
        let kinds = |c: KindChoice, s| c.ways(s).map(|w| w.kind).collect::<Vec<_>>();
        assert_eq!(kinds(KindChoice::Auto, conn), [Kind::Fentry, Kind::Kprobe]);
        assert_eq!(kinds(KindChoice::Kprobe, conn), [Kind::Kprobe]);
        assert!(kinds(KindChoice::TpBtf, conn).is_empty());
        assert_eq!(kinds(KindChoice::RawTp, synack), [Kind::RawTp]);
        assert_eq!(
            kinds(KindChoice::Fentry, synack),
            [Kind::TpBtf, Kind::RawTp, Kind::Tracepoint],
            "only tracepoints see SYN-ACK retransmits"
        );
    }
}
