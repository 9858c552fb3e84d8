//! Loads the eBPF object embedded in this binary and attaches every hook the running
//! kernel supports. Dropping [`Probes`] detaches and unloads everything.

use anyhow::Context as _;
use aya::{programs::TracePoint, Ebpf, EbpfLoader};
use listendrop_common::{GLOBAL_OFFSETS, MAP_DROPS, MAP_EVENTS};

use crate::layout::Layout;

/// The eBPF object, built by `build.rs` with aya-build and embedded at compile time.
static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/listendrop-ebpf"));

/// Map sizes chosen by the user.
#[derive(Clone, Copy, Debug)]
pub struct Sizes {
    /// Entries of the per-listener counter map.
    pub max_listener_keys: u32,
    /// Bytes of the event ring buffer (power of two, page multiple).
    pub events_bytes: u32,
}

/// One hook and what became of it.
#[derive(Clone, Debug)]
pub struct Hook {
    /// What the hook is attached to, e.g. `skb:kfree_skb`.
    pub probe: &'static str,
    /// How: `tracepoint` (later `fentry`, `kprobe`, ...).
    pub kind: &'static str,
    /// `Ok` when attached, otherwise why not.
    pub status: Result<(), String>,
}

/// Loaded programs and their maps; attached hooks stay attached while this lives.
pub struct Probes {
    /// The loaded object (programs, links and the maps not yet taken).
    pub ebpf: Ebpf,
    /// Every hook listendrop knows, attached or not.
    pub hooks: Vec<Hook>,
}

impl Probes {
    /// Loads the programs with `layout` and attaches the hooks it allows.
    pub fn load(layout: &Layout, sizes: Sizes) -> anyhow::Result<Self> {
        let mut ebpf = EbpfLoader::new()
            // The programs carry no CO-RE relocations (offsets come in OFFSETS), so aya
            // needs no kernel BTF of its own.
            .btf(None)
            .override_global(GLOBAL_OFFSETS, &layout.offsets, true)
            .map_max_entries(MAP_DROPS, sizes.max_listener_keys)
            .map_max_entries(MAP_EVENTS, sizes.events_bytes)
            .load(EBPF_OBJECT)
            .context("loading the eBPF programs into the kernel failed")?;

        let mut hooks = Vec::new();
        let status = match &layout.kfree_skb {
            Ok(()) => attach_tracepoint(&mut ebpf, "kfree_skb", "skb", "kfree_skb"),
            Err(why) => Err(why.clone()),
        };
        hooks.push(Hook {
            probe: "skb:kfree_skb",
            kind: "tracepoint",
            status,
        });
        Ok(Self { ebpf, hooks })
    }
}

fn attach_tracepoint(
    ebpf: &mut Ebpf,
    program: &str,
    category: &str,
    name: &str,
) -> Result<(), String> {
    let prog: &mut TracePoint = ebpf
        .program_mut(program)
        .ok_or_else(|| format!("program {program} is missing from the eBPF object"))?
        .try_into()
        .map_err(|e| format!("program {program}: {e}"))?;
    prog.load()
        .map_err(|e| format!("the kernel refused program {program}: {e:#}"))?;
    prog.attach(category, name).map_err(|e| {
        format!("attaching to tracepoint {category}:{name} failed: {e:#} (is tracefs mounted?)")
    })?;
    Ok(())
}
