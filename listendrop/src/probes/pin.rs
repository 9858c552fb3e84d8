//! Pinning in bpffs, so that a restarted daemon continues the same counters and no drop
//! goes uncounted while it restarts. An upgrade (another eBPF object) or new settings
//! start new counters: the old hooks keep counting until the new ones are attached, then
//! their pins are removed (Prometheus sees a counter reset).
//!
//! Layout under the pin directory (default `/sys/fs/bpf/listendrop`):
//! `<fingerprint>/maps/<MAP>` and `<fingerprint>/links/<hook>-<kind>-<n>` (`<hook>` the
//! hook's index in the [table](super::table::HOOKS), `<kind>` its label). The
//! fingerprint covers the eBPF object, the kernel layout and the settings: a restart with
//! the same ones adopts the pinned links and maps as they are (the programs never stopped
//! counting); anything else attaches afresh and then removes the other fingerprints.
//! Perf-event links (kprobes, classic tracepoints) are bpf links only since Linux 5.15;
//! before that they cannot be pinned and detach when the daemon exits.

use std::{
    hash::{Hash as _, Hasher as _},
    path::{Path, PathBuf},
};

use aya::programs::links::PinnedLink;

use super::{
    attach::AttachedLink,
    programs::LinkIds,
    table::{HookSpec, Kind, HOOKS},
    Hook, OwnedLink,
};

/// Why the pin directory could not be used. Each names the fix.
#[derive(Debug, thiserror::Error)]
pub enum PinError {
    /// bpffs is not mounted where the pins go, and could not be mounted.
    #[error(
        "{path} is not on a bpffs and mounting one at /sys/fs/bpf failed ({source}): \
         `mount -t bpf bpf /sys/fs/bpf`, another --pin-dir, or --no-pin"
    )]
    Mount {
        /// The pin directory.
        path: PathBuf,
        /// The mount error.
        source: nix::errno::Errno,
    },
    /// The pin directory is elsewhere than on a bpffs.
    #[error("{0} is not on a bpffs: mount one there (`mount -t bpf bpf DIR`) or use --no-pin")]
    NotBpffs(PathBuf),
    /// A directory could not be created, opened or read.
    #[error("cannot {what} {path}: {source} (run as root, or use --no-pin)")]
    Io {
        /// What was attempted.
        what: &'static str,
        /// Where.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Another listendrop holds the pins.
    #[error(
        "another listendrop uses the pins in {path} ({errno}): stop it first, or give this \
         one another --pin-dir (or --no-pin)"
    )]
    Locked {
        /// The pin root.
        path: PathBuf,
        /// The flock error.
        errno: nix::errno::Errno,
    },
}

fn io<'p>(what: &'static str, path: &'p Path) -> impl FnOnce(std::io::Error) -> PinError + 'p {
    move |source| PinError::Io {
        what,
        path: path.to_owned(),
        source,
    }
}

/// The maps the daemon reads, pinned so their counts survive a restart.
pub(super) const PINNED_MAPS: [&str; 5] = [
    listendrop_common::MAP_DROPS,
    listendrop_common::MAP_COUNTERS,
    listendrop_common::MAP_EVENTS,
    listendrop_common::MAP_HIGH_WATER,
    listendrop_common::MAP_HANDSHAKES,
];

/// A fingerprint of what the programs would be: object, layout, settings, choice.
pub(super) fn fingerprint(parts: &[&[u8]]) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for part in parts {
        part.hash(&mut h);
    }
    format!("{:016x}", h.finish())
}

/// A plain-data value as bytes (for the fingerprint).
pub(super) fn bytes_of<T: aya::Pod>(value: &T) -> &[u8] {
    // SAFETY: T is Pod: plain data without padding, any byte view is valid.
    unsafe {
        std::slice::from_raw_parts(
            std::ptr::from_ref(value).cast::<u8>(),
            std::mem::size_of::<T>(),
        )
    }
}

/// The pin file name of the link of `spec` attached as `kind` running the way's
/// `program`th program.
fn link_name(spec: &HookSpec, kind: Kind, program: usize) -> String {
    format!("{}-{}-{program}", spec.index(), kind.as_str())
}

/// The hook a pin file name (from [`link_name`]) stands for, and the program's name.
fn parse_link_name(name: &str) -> Option<(Hook, &'static str)> {
    let mut parts = name.split('-');
    let spec = HOOKS.get(parts.next()?.parse::<usize>().ok()?)?;
    let kind = Kind::from_label(parts.next()?)?;
    let program = spec
        .way(kind)?
        .programs
        .get(parts.next()?.parse::<usize>().ok()?)?;
    let hook = Hook {
        spec,
        kind,
        status: Ok(()),
    };
    Some((hook, program))
}

/// What a restart adopts from a previous run's pins.
#[derive(Default)]
pub(super) struct Adopted {
    /// The hooks (one entry per hook and kind).
    pub hooks: Vec<Hook>,
    /// Their links, held.
    pub links: Vec<OwnedLink>,
    /// The ids of their programs and kprobe links.
    pub ids: Vec<LinkIds>,
}

/// The directory of one fingerprint, with the pin root locked for this process.
pub(super) struct PinDir {
    root: PathBuf,
    here: PathBuf,
    /// An exclusive flock on the pin root, held for the daemon's life: a second daemon
    /// or `listendrop unpin` cannot touch the pins while it runs.
    _lock: nix::fcntl::Flock<std::fs::File>,
}

/// Takes the exclusive lock of the pin root `root` (flock works on bpffs directories).
fn lock_root(root: &Path) -> Result<nix::fcntl::Flock<std::fs::File>, PinError> {
    let dir = std::fs::File::open(root).map_err(io("open", root))?;
    nix::fcntl::Flock::lock(dir, nix::fcntl::FlockArg::LockExclusiveNonblock).map_err(
        |(_, errno)| PinError::Locked {
            path: root.to_owned(),
            errno,
        },
    )
}

/// The marker (an empty directory: bpffs holds no regular files) that a fingerprint's
/// links were all pinned.
const COMPLETE: &str = "complete";

/// Where bpffs is normally mounted (systemd does it at boot).
const BPFFS: &str = "/sys/fs/bpf";

/// Makes sure `root` lies on a bpffs: mounts one at /sys/fs/bpf when nothing is mounted
/// there (as bpftool does); a `root` elsewhere must already be on one.
pub(super) fn ensure_bpffs(root: &Path) -> Result<(), PinError> {
    use nix::sys::statfs::{statfs, BPF_FS_MAGIC};
    let on_bpffs = |p: &Path| statfs(p).is_ok_and(|s| s.filesystem_type() == BPF_FS_MAGIC);
    let anchor = root
        .ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("/"));
    if on_bpffs(anchor) {
        return Ok(());
    }
    if root.starts_with(BPFFS) && Path::new(BPFFS).is_dir() {
        nix::mount::mount(
            Some("bpf"),
            BPFFS,
            Some("bpf"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .map_err(|source| PinError::Mount {
            path: root.to_owned(),
            source,
        })?;
        tracing::info!("mounted bpffs at {BPFFS} for the pins");
        return Ok(());
    }
    Err(PinError::NotBpffs(root.to_owned()))
}

impl PinDir {
    pub(super) fn new(root: &Path, fingerprint: &str) -> Result<Self, PinError> {
        ensure_bpffs(root)?;
        std::fs::create_dir_all(root).map_err(io("create", root))?;
        let lock = lock_root(root)?;
        let here = root.join(fingerprint);
        for sub in ["maps", "links"] {
            let dir = here.join(sub);
            std::fs::create_dir_all(&dir).map_err(io("create", &dir))?;
        }
        Ok(Self {
            root: root.to_owned(),
            here,
            _lock: lock,
        })
    }

    /// Where map `name` is pinned.
    pub(super) fn map(&self, name: &str) -> PathBuf {
        self.here.join("maps").join(name)
    }

    /// The hooks pinned by a previous run with the same fingerprint, if it pinned them
    /// all, with their links (held so that removing the pin files cannot detach them) and
    /// the ids of their programs.
    pub(super) fn adoptable(&self) -> Option<Adopted> {
        if !self.here.join(COMPLETE).is_dir() {
            return None;
        }
        let maps_ok = PINNED_MAPS.iter().all(|m| self.map(m).exists());
        let mut adopted = Adopted::default();
        for entry in std::fs::read_dir(self.here.join("links"))
            .ok()?
            .filter_map(Result::ok)
        {
            let Some((hook, program)) = entry.file_name().to_str().and_then(parse_link_name) else {
                continue;
            };
            let fd = super::info::pinned_fd(&entry.path()).ok()?;
            let (program_id, link_id) = super::info::link_ids(&fd).ok()?;
            adopted.ids.push(LinkIds {
                program,
                program_id,
                kprobe_link_id: (hook.kind == Kind::Kprobe).then_some(link_id),
            });
            adopted
                .links
                .push(OwnedLink::Pinned(PinnedLink::from_pin(entry.path()).ok()?));
            // A hook is one entry however many links it has.
            if !adopted
                .hooks
                .iter()
                .any(|h| std::ptr::eq(h.spec, hook.spec) && h.kind == hook.kind)
            {
                adopted.hooks.push(hook);
            }
        }
        (maps_ok && !adopted.hooks.is_empty()).then_some(adopted)
    }

    /// Unpins the links a previous run left here without finishing (no marker): a fresh
    /// load starts from its maps only.
    pub(super) fn clear_links(&self) {
        let _ = std::fs::remove_dir(self.here.join(COMPLETE));
        if let Ok(links) = std::fs::read_dir(self.here.join("links")) {
            for link in links.filter_map(Result::ok) {
                if let Ok(pinned) = PinnedLink::from_pin(link.path()) {
                    let _ = pinned.unpin();
                } else {
                    let _ = std::fs::remove_file(link.path());
                }
            }
        }
    }

    /// Pins every link, or — when some cannot be pinned (perf-event links before Linux
    /// 5.15) — none: a restart then loads afresh onto the pinned maps (counters continue,
    /// drops during the restart are missed) instead of resuming half the hooks. Returns
    /// the links to hold (pinned ones too: holding them keeps the hooks attached even if
    /// someone removes the pin files) and, for each link that could not be pinned, the
    /// probe and kind whose hook it detached.
    pub(super) fn pin_links(
        &self,
        links: Vec<AttachedLink>,
    ) -> (Vec<OwnedLink>, Vec<(&'static HookSpec, Kind, String)>) {
        // Kprobe and tracepoint links are BPF links (pinnable) where the kernel has them
        // (5.15+); the attacher made them so.
        let pinnable = links
            .iter()
            .all(|l| matches!(l.link, OwnedLink::Fd(_) | OwnedLink::Pinned(_)));
        if !pinnable {
            tracing::warn!(
                "this kernel cannot pin kprobe/tracepoint links (bpf perf links need 5.15+): \
                 the counters are pinned and continue across a restart, but drops during \
                 the restart itself are missed"
            );
            return (links.into_iter().map(|l| l.link).collect(), Vec::new());
        }
        let mut held = Vec::new();
        let mut failed = Vec::new();
        for AttachedLink {
            spec,
            kind,
            program,
            link,
        } in links
        {
            let path = self.here.join("links").join(link_name(spec, kind, program));
            let fd = match link {
                OwnedLink::Fd(l) => l,
                // Already pinned, or (checked above) not here.
                other => {
                    held.push(other);
                    continue;
                }
            };
            // A failed pin drops (detaches) the link: the hook is lost.
            match fd.pin(&path) {
                Ok(pinned) => held.push(OwnedLink::Pinned(pinned)),
                Err(e) => failed.push((
                    spec,
                    kind,
                    format!("pinning {} failed: {e}", path.display()),
                )),
            }
        }
        if failed.is_empty() {
            if let Err(e) = std::fs::create_dir(self.here.join(COMPLETE)) {
                tracing::warn!(
                    "cannot mark the pins complete ({e}): a restart will not resume them"
                );
            }
        }
        (held, failed)
    }

    /// Removes the pins of every other fingerprint (older versions or settings): their
    /// links detach, their maps are freed.
    pub(super) fn remove_others(&self) {
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return;
        };
        for entry in entries.filter_map(Result::ok) {
            if entry.path() != self.here {
                remove(&entry.path());
            }
        }
    }
}

/// Detaches and removes everything pinned under `dir` (links first, then maps).
pub fn remove(dir: &Path) {
    if let Ok(links) = std::fs::read_dir(dir.join("links")) {
        for link in links.filter_map(Result::ok) {
            match PinnedLink::from_pin(link.path()) {
                Ok(pinned) => {
                    let _ = pinned.unpin();
                }
                Err(_) => {
                    let _ = std::fs::remove_file(link.path());
                }
            }
        }
    }
    if let Ok(maps) = std::fs::read_dir(dir.join("maps")) {
        for map in maps.filter_map(Result::ok) {
            let _ = std::fs::remove_file(map.path());
        }
    }
    let _ = std::fs::remove_dir(dir.join(COMPLETE));
    let _ = std::fs::remove_dir(dir.join("links"));
    let _ = std::fs::remove_dir(dir.join("maps"));
    let _ = std::fs::remove_dir(dir);
}

/// `listendrop unpin`: removes every fingerprint under `root`, then `root`; refused
/// while a daemon holds the pins.
pub fn remove_all(root: &Path) -> Result<usize, PinError> {
    if !root.exists() {
        return Ok(0);
    }
    let lock = lock_root(root)?;
    let entries = std::fs::read_dir(root).map_err(io("read", root))?;
    let mut removed = 0;
    for entry in entries.filter_map(Result::ok) {
        remove(&entry.path());
        removed += 1;
    }
    drop(lock);
    std::fs::remove_dir(root).map_err(io("remove", root))?;
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_names_round_trip() {
        for spec in &HOOKS {
            for way in spec.ways {
                for (i, name) in way.programs.iter().enumerate() {
                    let (hook, program) = parse_link_name(&link_name(spec, way.kind, i)).unwrap();
                    assert!(std::ptr::eq(hook.spec, spec));
                    assert_eq!(hook.kind, way.kind);
                    assert_eq!(program, *name);
                }
            }
        }
        let (hook, program) = parse_link_name("3-tp_btf-0").unwrap();
        assert_eq!(hook.probe(), "skb:kfree_skb");
        assert_eq!(hook.kind, Kind::TpBtf);
        assert_eq!(program, "kfree_skb_btf");
        assert!(parse_link_name("3-tp_btf-1").is_none(), "one program");
        assert!(parse_link_name("9-fentry-0").is_none());
        assert!(parse_link_name("1-uprobe-0").is_none());
        assert!(parse_link_name("nonsense").is_none());
    }

    #[test]
    fn fingerprints_change_with_any_part() {
        let a = fingerprint(&[b"object", b"layout"]);
        assert_eq!(a, fingerprint(&[b"object", b"layout"]));
        assert_ne!(a, fingerprint(&[b"object", b"layout2"]));
    }
}
