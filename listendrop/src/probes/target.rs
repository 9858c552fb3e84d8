//! The attach target of a BTF-typed program (fentry, fexit, tp_btf), handed to aya without
//! aya parsing the kernel's whole BTF.
//!
//! All the kernel needs to load such a program is the target's BTF type id in vmlinux
//! (`attach_btf_id` of `BPF_PROG_LOAD`). aya 0.14 finds that id by name in an [`aya::Btf`],
//! and `Btf::from_sys_fs()` of a 6.18 vmlinux costs ~17 MB of transient heap (a copy of
//! the file, its strings, one allocation per struct and prototype). The id is already
//! known from the layout's BTF lookup ([`crate::btf::KernelBtf::func_id`]), so aya gets a
//! BTF that holds that one named type at that id, every id before it a placeholder
//! (`BTF_KIND_UNKN`, 12 bytes, which aya parses as `BtfType::Unknown` and its name search
//! skips). aya reads nothing else of it: the program's own BTF comes from our object.

use aya::{Btf, Endianness};

/// What a BTF-typed program attaches to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Target {
    /// A kernel function (fentry, fexit): `BTF_KIND_FUNC`.
    Func,
    /// A tracepoint's `btf_trace_<event>` typedef (tp_btf): `BTF_KIND_TYPEDEF`.
    Typedef,
}

impl Target {
    /// The kind number in `btf_type.info` bits 24–28 (include/uapi/linux/btf.h, stable
    /// since 4.18).
    const fn kind(self) -> u32 {
        match self {
            Self::Typedef => 8,
            Self::Func => 12,
        }
    }
}

/// A BTF in which type `id` is the `target` named `name`, for aya's `load(name, &btf)`.
pub(super) fn btf(name: &str, target: Target, id: u32) -> Result<Btf, String> {
    if id == 0 {
        return Err(format!("BTF type id 0 (void) is not a {name}"));
    }
    // struct btf_header: magic, version, flags, hdr_len, then the type and string
    // sections as offsets from the end of the header.
    const HEADER_LEN: u32 = 24;
    const TYPE_LEN: u32 = 12;
    let type_len = id
        .checked_mul(TYPE_LEN)
        .ok_or_else(|| format!("BTF type id {id} of {name} is out of range"))?;
    let strings: Vec<u8> = [&[0][..], name.as_bytes(), &[0]].concat();
    let str_len = u32::try_from(strings.len()).map_err(|_| format!("{name} is too long"))?;
    let mut raw = Vec::with_capacity((HEADER_LEN + type_len + str_len) as usize);
    raw.extend_from_slice(&0xeb9f_u16.to_ne_bytes());
    raw.extend_from_slice(&[1, 0]);
    for word in [HEADER_LEN, 0, type_len, type_len, str_len] {
        raw.extend_from_slice(&word.to_ne_bytes());
    }
    // Ids 1 .. id-1: placeholders (name 0, info 0 = BTF_KIND_UNKN, 0).
    raw.resize(raw.len() + (type_len - TYPE_LEN) as usize, 0);
    // Id `id`: name at string offset 1, the kind, no referenced type (aya's name search
    // and the kernel's load read neither).
    for word in [1, target.kind() << 24, 0] {
        raw.extend_from_slice(&u32::to_ne_bytes(word));
    }
    raw.extend_from_slice(&strings);
    Btf::parse(&raw, Endianness::default()).map_err(|e| format!("BTF for {name}: {e}"))
}

#[cfg(test)]
mod tests {
    use aya_obj::btf::BtfKind;

    use super::*;

    #[test]
    fn aya_finds_the_target_at_its_id() {
        for (target, kind) in [
            (Target::Func, BtfKind::Func),
            (Target::Typedef, BtfKind::Typedef),
        ] {
            for id in [1, 2, 38_092, 114_155, 200_000] {
                let btf = btf("tcp_conn_request", target, id).unwrap();
                assert_eq!(
                    btf.id_by_type_name_kind("tcp_conn_request", kind).unwrap(),
                    id
                );
                // The placeholders carry no name and the wrong kind is not found.
                assert!(btf.id_by_type_name_kind("", kind).is_err());
            }
        }
        let btf = btf("btf_trace_kfree_skb", Target::Typedef, 7).unwrap();
        assert!(btf
            .id_by_type_name_kind("btf_trace_kfree_skb", BtfKind::Func)
            .is_err());
        assert!(super::btf("x", Target::Func, 0).is_err());
    }
}
