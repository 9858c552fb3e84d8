//! Tracepoint record layouts from tracefs (`events/<category>/<name>/format`): the kernel's
//! stable description of what a classic tracepoint program sees.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

/// Why there is no tracefs, and the fix.
pub const NOT_MOUNTED: &str =
    "tracefs is not mounted: run `mount -t tracefs nodev /sys/kernel/tracing` (or add it to /etc/fstab)";

/// One field of a tracepoint record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Field {
    /// Byte offset in the record.
    pub offset: u32,
    /// Size in bytes.
    pub size: u32,
}

/// A mounted tracefs.
#[derive(Clone, Debug)]
pub struct Tracefs {
    root: PathBuf,
}

impl Tracefs {
    /// The mounted tracefs, at `/sys/kernel/tracing` (4.1+) or under debugfs.
    pub fn find() -> Option<Self> {
        Self::locate().ok()
    }

    /// The mounted tracefs, or why there is none usable, with the fix.
    pub fn locate() -> Result<Self, String> {
        let mut denied = None;
        for root in ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"].map(Path::new) {
            match std::fs::metadata(root.join("events")) {
                Ok(m) if m.is_dir() => {
                    return Ok(Self {
                        root: root.to_owned(),
                    })
                }
                Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                    denied.get_or_insert(root);
                }
                _ => {}
            }
        }
        Err(match denied {
            Some(root) => format!(
                "cannot read tracefs at {}: permission denied (run as root, or grant \
                 CAP_DAC_READ_SEARCH as the systemd unit does)",
                root.display()
            ),
            None => NOT_MOUNTED.to_owned(),
        })
    }

    /// A tracefs laid out at `root` (tests).
    #[cfg(test)]
    pub fn at(root: &Path) -> Self {
        Self {
            root: root.to_owned(),
        }
    }

    /// The raw format file of `category:name`.
    pub fn read_format(&self, category: &str, name: &str) -> std::io::Result<String> {
        std::fs::read_to_string(
            self.root
                .join("events")
                .join(category)
                .join(name)
                .join("format"),
        )
    }

    /// The fields of `category:name`, or `None` when this kernel has no such tracepoint.
    pub fn fields(&self, category: &str, name: &str) -> Option<HashMap<String, Field>> {
        self.read_format(category, name)
            .ok()
            .map(|text| parse_format(&text))
    }
}

/// Parses the `field:` lines of a tracepoint format file.
///
/// A line looks like `\tfield:void * rx_sk;\toffset:24;\tsize:8;\tsigned:0;`; arrays
/// (`__u8 saddr[4]`) are keyed by their bare name.
pub fn parse_format(text: &str) -> HashMap<String, Field> {
    let mut fields = HashMap::new();
    for line in text.lines() {
        let mut decl = None;
        let mut offset = None;
        let mut size = None;
        for part in line.split(';') {
            let part = part.trim();
            if let Some(d) = part.strip_prefix("field:") {
                decl = Some(d);
            } else if let Some(o) = part.strip_prefix("offset:") {
                offset = o.parse().ok();
            } else if let Some(s) = part.strip_prefix("size:") {
                size = s.parse().ok();
            }
        }
        if let (Some(decl), Some(offset), Some(size)) = (decl, offset, size) {
            let name = decl.rsplit([' ', '*']).next().unwrap_or(decl);
            let name = name.split('[').next().unwrap_or(name);
            fields.insert(name.to_owned(), Field { offset, size });
        }
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The head of `events/skb/kfree_skb/format` on Linux 6.18.
    const KFREE_SKB_6_18: &str = "name: kfree_skb
ID: 2310
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:void * skbaddr;\toffset:8;\tsize:8;\tsigned:0;
\tfield:void * location;\toffset:16;\tsize:8;\tsigned:0;
\tfield:void * rx_sk;\toffset:24;\tsize:8;\tsigned:0;
\tfield:unsigned short protocol;\toffset:32;\tsize:2;\tsigned:0;
\tfield:enum skb_drop_reason reason;\toffset:36;\tsize:4;\tsigned:0;

print fmt: \"skbaddr=%p rx_sk=%p\", REC->skbaddr, REC->rx_sk
";

    #[test]
    fn parses_pointer_enum_and_array_fields() {
        let f = parse_format(KFREE_SKB_6_18);
        assert_eq!(
            f["rx_sk"],
            Field {
                offset: 24,
                size: 8
            }
        );
        assert_eq!(
            f["reason"],
            Field {
                offset: 36,
                size: 4
            }
        );
        assert_eq!(f["skbaddr"], Field { offset: 8, size: 8 });
        let synack = parse_format("\tfield:__u8 saddr_v6[16];\toffset:38;\tsize:16;\tsigned:0;");
        assert_eq!(
            synack["saddr_v6"],
            Field {
                offset: 38,
                size: 16
            }
        );
    }

    #[test]
    fn live_format_agrees_with_btf_record_struct() {
        // The kernel also describes the record as `struct trace_event_raw_kfree_skb` in BTF:
        // two independent sources must agree.
        let (Some(tracefs), Ok(btf)) = (
            Tracefs::find(),
            crate::btf::KernelBtf::open(Path::new("/sys/kernel/btf/vmlinux")),
        ) else {
            crate::util::skip_test("needs tracefs mounted and kernel BTF");
            return;
        };
        let fields = tracefs
            .fields("skb", "kfree_skb")
            .expect("skb:kfree_skb exists");
        for name in ["skbaddr", "rx_sk", "reason"] {
            let Some(field) = fields.get(name) else {
                continue;
            };
            let member = btf.member("trace_event_raw_kfree_skb", name).unwrap();
            assert_eq!(field.offset, member.offset, "{name}");
        }
    }
}
