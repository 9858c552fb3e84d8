//! Puts each field's offset on the running kernel into the instructions that load it.
//!
//! The BTF-typed programs load a kernel struct's field with a marker
//! ([`FieldMark`]) as the load instruction's offset, and compare with a kernel value (the
//! drop reason) given as a marker immediate ([`ValueMark`]); this replaces every marker
//! with what the layout resolved, in a copy of the object, before aya parses it. libbpf
//! does the same from CO-RE relocation records, which rustc does not emit. The result: one
//! load per field, where reading the offset from `.rodata` cost a load, a move and an add,
//! and a compare with an immediate.

use aya_obj::generated::{
    BPF_ALU, BPF_ALU64, BPF_CALL, BPF_DW, BPF_EXIT, BPF_IMM, BPF_JA, BPF_JMP, BPF_JMP32, BPF_K,
    BPF_LD, BPF_LDX, BPF_MEM, BPF_MEMSX, BPF_MOV, BPF_ST,
};
use listendrop_common::{FieldMark, KernelOffsets, ValueMark};
use object::{Object as _, ObjectSection as _, SectionKind};

/// Why the object's field loads could not be patched (a build or layout mismatch).
#[derive(Debug, thiserror::Error)]
pub enum FieldError {
    /// The embedded object is not an ELF file object can read.
    #[error("the embedded eBPF object cannot be read: {0}")]
    Elf(#[from] object::Error),
    /// A program section lies outside the file.
    #[error("eBPF object section {0} has no data in the file")]
    Section(String),
    /// The compiler put a field marker somewhere else than into a load's offset (into a
    /// register, to compute the address with), or a value marker into arithmetic:
    /// patching it would compute something else, leaving it would load elsewhere. The
    /// build is not what this code expects.
    #[error(
        "instruction {index} of eBPF section {section} uses marker {mark:#x} in an \
         arithmetic instruction: rebuild listendrop with the pinned toolchain"
    )]
    Unfolded {
        /// The section.
        section: String,
        /// Instruction index in it.
        index: usize,
        /// The marker.
        mark: i32,
    },
    /// A value marker where the patcher does not patch it (a store, a 64-bit immediate,
    /// an arithmetic instruction): the program would compare with the marker itself.
    #[error(
        "instruction {index} of eBPF section {section} holds value marker {mark:#x} where it \
         is not patched: rebuild listendrop with the pinned toolchain"
    )]
    Unpatched {
        /// The section.
        section: String,
        /// Instruction index in it.
        index: usize,
        /// The marker.
        mark: i32,
    },
    /// A value does not fit a sign-extended 32-bit immediate.
    #[error("kernel layout value {value} (field {field}) does not fit an instruction's immediate")]
    Value {
        /// Index of the field in `KernelOffsets`.
        field: usize,
        /// The value.
        value: u32,
    },
    /// No load or no immediate carried a marker: the programs were not built from this
    /// source.
    #[error(
        "the eBPF object has no field loads or values to patch: it was not built from this source"
    )]
    NoMarkers,
}

/// A copy of the object with every field load patched for `offsets`, 8-byte aligned as the
/// ELF reader needs.
pub struct Patched {
    words: Vec<u64>,
    len: usize,
    /// How many loads were patched.
    pub loads: usize,
    /// How many immediates were patched.
    pub values: usize,
    /// Fields whose offset (with delta) does not fit a load's 16-bit offset (no kernel
    /// seen so far: `struct net`, the largest, is ~4 KB). Their loads are given offset -1,
    /// which the verifier refuses in a BTF-typed program, so the hooks that read them
    /// fall back to a kind that reads through the helper.
    pub too_far: Vec<(usize, u32)>,
}

impl Patched {
    /// The patched object.
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: `words` holds at least `len` initialised bytes; u8 has no alignment.
        unsafe { std::slice::from_raw_parts(self.words.as_ptr().cast::<u8>(), self.len) }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `bytes`, and `self` is borrowed mutably.
        unsafe { std::slice::from_raw_parts_mut(self.words.as_mut_ptr().cast::<u8>(), self.len) }
    }
}

/// One instruction's size; `BPF_LD | BPF_IMM | BPF_DW` (a 64-bit immediate) takes two.
const INSN: usize = 8;

/// Patches every field load of `elf` (an eBPF object) for `offsets`.
pub fn patch(elf: &[u8], offsets: &KernelOffsets) -> Result<Patched, FieldError> {
    let sections: Vec<(String, std::ops::Range<usize>)> = {
        let file = object::File::parse(elf)?;
        file.sections()
            .filter(|s| s.kind() == SectionKind::Text)
            .map(|s| {
                let name = s.name().unwrap_or("?").to_owned();
                let (start, size) = s
                    .file_range()
                    .ok_or_else(|| FieldError::Section(name.clone()))?;
                let start =
                    usize::try_from(start).map_err(|_| FieldError::Section(name.clone()))?;
                let size = usize::try_from(size).map_err(|_| FieldError::Section(name.clone()))?;
                Ok((name, start..start + size))
            })
            .collect::<Result<_, FieldError>>()?
    };
    let mut out = Patched {
        words: vec![0; elf.len().div_ceil(8)],
        len: elf.len(),
        loads: 0,
        values: 0,
        too_far: Vec::new(),
    };
    out.bytes_mut().copy_from_slice(elf);
    let words = offsets.words();
    let mut too_far = Vec::new();
    for (name, range) in sections {
        let code = out
            .bytes_mut()
            .get_mut(range)
            .ok_or_else(|| FieldError::Section(name.clone()))?;
        let (loads, values) = patch_section(&name, code, &words, &mut too_far)?;
        out.loads += loads;
        out.values += values;
    }
    out.too_far = too_far;
    if out.loads == 0 || out.values == 0 {
        return Err(FieldError::NoMarkers);
    }
    Ok(out)
}

/// Patches the loads and immediates of one section's instructions; returns how many of
/// each.
fn patch_section(
    name: &str,
    code: &mut [u8],
    words: &[u32],
    too_far: &mut Vec<(usize, u32)>,
) -> Result<(usize, usize), FieldError> {
    const LD_IMM64: u8 = (BPF_LD | BPF_IMM | BPF_DW) as u8;
    let (mut loads, mut values) = (0, 0);
    let mut at = 0;
    while at + INSN <= code.len() {
        let insn = &mut code[at..at + INSN];
        let op = u32::from(insn[0]);
        if op == u32::from(LD_IMM64) {
            // Both halves' immediates make one 64-bit value: never a marker of ours.
            let halves = [4, 12].map(|i| {
                code.get(at + i..at + i + 4)
                    .map_or(0, |b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            });
            if let Some(mark) = halves.into_iter().find(|h| ValueMark::of(*h).is_some()) {
                return Err(unpatched(name, at, mark));
            }
            // A field marker as the whole value: an offset about to be added to an address.
            if halves[1] == 0 && marks_field(halves[0]) {
                return Err(unfolded(name, at, halves[0]));
            }
            at += 2 * INSN;
            continue;
        }
        let (class, mode) = (op & 0x07, op & 0xe0);
        if class == BPF_LDX && (mode == BPF_MEM || mode == BPF_MEMSX) {
            let off = i16::from_le_bytes([insn[2], insn[3]]);
            if let Some(mark) = FieldMark::of(off) {
                let offset = words[mark.field].saturating_add(mark.delta as u32);
                let off = i16::try_from(offset).unwrap_or_else(|_| {
                    if !too_far.contains(&(mark.field, offset)) {
                        too_far.push((mark.field, offset));
                    }
                    -1
                });
                insn[2..4].copy_from_slice(&off.to_le_bytes());
                loads += 1;
            }
        }
        let imm = i32::from_le_bytes([insn[4], insn[5], insn[6], insn[7]]);
        let marks_field = marks_field(imm);
        let value = ValueMark::of(imm);
        // A field marker stored to memory comes back as an offset to add to an address.
        if marks_field && class == BPF_ST {
            return Err(unfolded(name, at, imm));
        }
        let alu = class == BPF_ALU || class == BPF_ALU64;
        let with_k = op & 0x08 == BPF_K;
        if with_k && (alu || class == BPF_JMP || class == BPF_JMP32) {
            let jump_op = op & 0xf0;
            let compare = !alu && ![BPF_JA, BPF_CALL, BPF_EXIT].contains(&jump_op);
            let mov = alu && op & 0xf0 == BPF_MOV;
            match value {
                Some(mark) if compare || mov => {
                    let value = words[mark.field];
                    // Sign-extended to 64 bits by JMP and ALU64: it must stay positive.
                    if i32::try_from(value).is_err() {
                        return Err(FieldError::Value {
                            field: mark.field,
                            value,
                        });
                    }
                    insn[4..8].copy_from_slice(&value.to_le_bytes());
                    values += 1;
                    at += INSN;
                    continue;
                }
                // A field marker in arithmetic computes an address the compiler did not
                // fold into a load: added to the base directly, or moved into a register
                // that is added next (seen when the compiler runs short of registers);
                // arithmetic on a value marker would patch into nonsense.
                _ if alu && (marks_field || value.is_some()) => {
                    return Err(unfolded(name, at, imm));
                }
                _ => {}
            }
        }
        if let Some(mark) = value {
            return Err(unpatched(name, at, mark.imm()));
        }
        at += INSN;
    }
    Ok((loads, values))
}

/// Whether immediate `imm` is a field marker.
fn marks_field(imm: i32) -> bool {
    i16::try_from(imm).ok().and_then(FieldMark::of).is_some()
}

fn unfolded(section: &str, at: usize, mark: i32) -> FieldError {
    FieldError::Unfolded {
        section: section.to_owned(),
        index: at / INSN,
        mark,
    }
}

fn unpatched(section: &str, at: usize, mark: i32) -> FieldError {
    FieldError::Unpatched {
        section: section.to_owned(),
        index: at / INSN,
        mark,
    }
}

#[cfg(test)]
mod tests {
    use object::ObjectSymbol as _;

    use super::*;

    /// A layout whose every field has a distinct offset: field `i` at `16 * i + 8`.
    fn layout() -> KernelOffsets {
        let words: [u32; KernelOffsets::FIELDS] = std::array::from_fn(|i| 16 * i as u32 + 8);
        // SAFETY: KernelOffsets is repr(C) of FIELDS u32 (asserted in listendrop-common).
        unsafe { std::mem::transmute(words) }
    }

    /// Every marked load of the real object, as (section, index, field, delta).
    fn marks(elf: &[u8]) -> Vec<(String, usize, FieldMark)> {
        let file = object::File::parse(elf).unwrap();
        let mut found = Vec::new();
        for s in file.sections().filter(|s| s.kind() == SectionKind::Text) {
            let data = s.data().unwrap();
            let mut at = 0;
            while at + INSN <= data.len() {
                if data[at] == (BPF_LD | BPF_IMM | BPF_DW) as u8 {
                    at += 2 * INSN;
                    continue;
                }
                if u32::from(data[at]) & 0x07 == BPF_LDX {
                    let off = i16::from_le_bytes([data[at + 2], data[at + 3]]);
                    if let Some(m) = FieldMark::of(off) {
                        found.push((s.name().unwrap().to_owned(), at / INSN, m));
                    }
                }
                at += INSN;
            }
        }
        found
    }

    #[test]
    fn every_marked_load_of_the_object_gets_its_fields_offset() {
        let elf = super::super::EBPF_OBJECT;
        let before = marks(elf);
        // The typed programs read at least the listener's key fields this way.
        let typed = |field| before.iter().any(|(_, _, m)| m.field == field);
        let idx = |f: usize| f / 4;
        assert!(typed(idx(std::mem::offset_of!(KernelOffsets, sk_family))));
        assert!(typed(idx(std::mem::offset_of!(
            KernelOffsets,
            sk_ack_backlog
        ))));
        assert!(typed(idx(std::mem::offset_of!(KernelOffsets, net_ns_inum))));
        // Only the 16-byte addresses are read in words past the field's start: any other
        // delta is a marker the compiler folded with another constant.
        let v6 = [
            idx(std::mem::offset_of!(KernelOffsets, sk_v6_rcv_saddr)),
            idx(std::mem::offset_of!(KernelOffsets, sk_v6_daddr)),
        ];
        for (section, index, m) in &before {
            let word = v6.contains(&m.field) && [4, 8, 12].contains(&m.delta);
            assert!(m.delta == 0 || word, "{section}[{index}]: {m:?}");
        }
        let offsets = layout();
        let patched = patch(elf, &offsets).unwrap();
        assert_eq!(patched.loads, before.len());
        // The three kfree_skb programs compare the drop reason with an immediate, and
        // nothing else is a value.
        assert_eq!(patched.values, 3);
        let reason = offsets.reason_tcp_listen_overflow.to_le_bytes();
        for program in ["kfree_skb_btf", "kfree_skb_raw", "kfree_skb"] {
            let file = object::File::parse(patched.bytes()).unwrap();
            let section = file
                .sections()
                .find(|s| {
                    s.kind() == SectionKind::Text
                        && file.symbols().any(|sym| {
                            sym.name() == Ok(program) && sym.section_index() == Some(s.index())
                        })
                })
                .unwrap_or_else(|| panic!("no section holds {program}"));
            let data = section.data().unwrap();
            let jump = |op: u8| [BPF_JMP, BPF_JMP32].contains(&u32::from(op & 0x07));
            assert!(
                data.chunks(INSN).any(|i| jump(i[0]) && i[4..8] == reason),
                "{program} does not compare with the reason"
            );
        }
        assert!(marks(patched.bytes()).is_empty(), "a marker survived");
        // Each marked instruction now loads at its field's offset plus delta, and nothing
        // else in the object changed.
        let file = object::File::parse(patched.bytes()).unwrap();
        for (section, index, m) in &before {
            let data = file.section_by_name(section).unwrap().data().unwrap();
            let insn = &data[index * INSN..][..INSN];
            let off = i16::from_le_bytes([insn[2], insn[3]]);
            assert_eq!(
                off as usize,
                16 * m.field + 8 + m.delta,
                "{section}[{index}]"
            );
        }
        let changed = elf
            .iter()
            .zip(patched.bytes())
            .filter(|(a, b)| a != b)
            .count();
        assert!(
            changed <= 2 * before.len() + 4 * patched.values,
            "{changed} bytes changed"
        );
        assert_eq!(elf.len(), patched.bytes().len());
    }

    /// A one-section object holding `code`, as the BPF toolchain lays one out.
    fn section(code: &[u8]) -> Result<(usize, usize), FieldError> {
        let mut code = code.to_vec();
        patch_section("test", &mut code, &layout().words(), &mut Vec::new())
    }

    fn insn(op: u32, off: i16, imm: i32) -> Vec<u8> {
        let mut i = vec![op as u8, 0x21];
        i.extend(off.to_le_bytes());
        i.extend(imm.to_le_bytes());
        i
    }

    #[test]
    fn markers_are_patched_in_loads_compares_and_moves_and_refused_elsewhere() {
        let mark = FieldMark { field: 3, delta: 4 }.offset();
        let load = insn(BPF_LDX | BPF_MEM, mark, 0);
        assert_eq!(section(&load).unwrap(), (1, 0));
        // The second half of a 64-bit immediate is skipped, whatever it holds.
        let ld_imm64 = [insn(BPF_LD | BPF_IMM | BPF_DW, 0, 0), load.clone()].concat();
        assert_eq!(section(&ld_imm64).unwrap(), (0, 0));
        // Added to an address, or put in a register or memory to be added next: refused.
        let unfolded = |code: &[u8]| matches!(section(code), Err(FieldError::Unfolded { mark: m, .. }) if m == i32::from(mark));
        for op in [
            BPF_ALU64 | aya_obj::generated::BPF_ADD,
            BPF_ALU64 | BPF_MOV,
            BPF_ALU | BPF_MOV,
        ] {
            assert!(unfolded(&insn(op | BPF_K, 0, i32::from(mark))), "{op:#x}");
        }
        let st = BPF_ST | BPF_MEM | aya_obj::generated::BPF_W;
        assert!(unfolded(&insn(st, -8, i32::from(mark))));
        let wide = [
            insn(BPF_LD | BPF_IMM | BPF_DW, 0, i32::from(mark)),
            insn(0, 0, 0),
        ];
        assert!(unfolded(&wide.concat()));
        // As the low half of a larger 64-bit value it is no offset: left alone.
        let larger = [
            insn(BPF_LD | BPF_IMM | BPF_DW, 0, i32::from(mark)),
            insn(0, 0, 1),
        ];
        assert_eq!(section(&larger.concat()).unwrap(), (0, 0));
        // A value: compared with (JNE, JMP32 JEQ) or moved, patched to the field's value.
        let value = ValueMark { field: 5 }.imm();
        let words = layout().words();
        for op in [
            BPF_JMP | aya_obj::generated::BPF_JNE | BPF_K,
            BPF_JMP32 | aya_obj::generated::BPF_JEQ | BPF_K,
            BPF_ALU64 | BPF_MOV | BPF_K,
        ] {
            let mut code = insn(op, 3, value);
            assert_eq!(
                patch_section("t", &mut code, &words, &mut Vec::new()).unwrap(),
                (0, 1)
            );
            assert_eq!(code[4..8], words[5].to_le_bytes());
            assert_eq!(code[2..4], 3i16.to_le_bytes(), "the jump offset is kept");
        }
        let sub = insn(BPF_ALU64 | aya_obj::generated::BPF_SUB | BPF_K, 0, value);
        assert!(matches!(section(&sub), Err(FieldError::Unfolded { .. })));
        // Anywhere else (a call's immediate, a store, a 64-bit immediate) it is refused.
        let call = insn(BPF_JMP | BPF_CALL, 0, value);
        assert!(matches!(section(&call), Err(FieldError::Unpatched { .. })));
        let store = insn(
            aya_obj::generated::BPF_ST | BPF_MEM | aya_obj::generated::BPF_W,
            -8,
            value,
        );
        assert!(matches!(section(&store), Err(FieldError::Unpatched { .. })));
        let wide = [insn(BPF_LD | BPF_IMM | BPF_DW, 0, 0), insn(0, 0, value)].concat();
        assert!(matches!(section(&wide), Err(FieldError::Unpatched { .. })));
        // A value that sign extension would turn negative is refused.
        let mut big = layout();
        big.bpf_array_pptrs = 0x8000_0000;
        let mut code = insn(
            BPF_JMP | aya_obj::generated::BPF_JNE | BPF_K,
            3,
            ValueMark { field: 0 }.imm(),
        );
        assert!(matches!(
            patch_section("t", &mut code, &big.words(), &mut Vec::new()),
            Err(FieldError::Value { field: 0, .. })
        ));
        // A field beyond a load's reach: its load gets offset -1 (refused by the
        // verifier: the hook falls back), and the field is reported.
        let mut far = layout();
        far.sk_family = 40_000;
        let field = std::mem::offset_of!(KernelOffsets, sk_family) / 4;
        let mut code = insn(BPF_LDX | BPF_MEM, FieldMark { field, delta: 0 }.offset(), 0);
        let mut too_far = Vec::new();
        assert_eq!(
            patch_section("test", &mut code, &far.words(), &mut too_far).unwrap(),
            (1, 0)
        );
        assert_eq!(code[2..4], (-1i16).to_le_bytes());
        assert_eq!(too_far, [(field, 40_000)]);
    }
}
