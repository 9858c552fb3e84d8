//! Kernel type information from BTF (`/sys/kernel/btf/vmlinux`, CONFIG_DEBUG_INFO_BTF=y,
//! Debian and most distributions since 5.x): struct member offsets and enum values of the
//! running kernel, so that no offset is compiled into listendrop.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{Mutex, PoisonError},
};

use btf_rs::{Btf, BtfType, Type};

/// A BTF lookup failure. Each variant says what is missing; callers add which hook needs it.
#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    /// The BTF file does not exist.
    #[error(
        "no kernel BTF at {path}: listendrop needs a kernel built with CONFIG_DEBUG_INFO_BTF=y \
         (every Debian/Ubuntu/RHEL kernel since 5.x); pass --btf FILE if it lives elsewhere"
    )]
    NotFound {
        /// The path that was tried.
        path: PathBuf,
    },
    /// The file exists but is not BTF.
    #[error("cannot parse kernel BTF at {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        source: btf_rs::Error,
    },
    /// No struct (or union) of that name.
    #[error("this kernel's BTF has no struct {name}")]
    NoStruct {
        /// The struct name.
        name: String,
    },
    /// The struct exists but has no such member (searched through anonymous members).
    #[error("this kernel's struct {strukt} has no member {member}")]
    NoMember {
        /// The struct name.
        strukt: String,
        /// The member path, dot-separated.
        member: String,
    },
    /// The member exists with a layout listendrop does not read (bitfield, other size).
    #[error("struct {strukt} member {member} is {found}, listendrop expects {expected}")]
    Layout {
        /// The struct name.
        strukt: String,
        /// The member path.
        member: String,
        /// What the kernel has.
        found: String,
        /// What listendrop reads.
        expected: String,
    },
    /// No enum of that name, or no such enumerator.
    #[error("this kernel has no {enumerator} in enum {name}")]
    NoEnumerator {
        /// The enum name.
        name: String,
        /// The enumerator.
        enumerator: String,
    },
    /// Any other BTF inconsistency.
    #[error("kernel BTF: {0}")]
    Other(String),
}

/// A member's place in its outermost struct.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Member {
    /// Byte offset from the start of the outermost struct.
    pub offset: u32,
    /// Size in bytes of the member's type.
    pub size: usize,
}

/// The running kernel's BTF.
///
/// With the mmap backend every lookup by name is a scan of every type (~150 000 on a
/// Debian 6.18 kernel): start-up asks for ~35 members of ~10 structs and 4 enumerators of
/// one enum, which took more than half of a daemon's start-up CPU (`perf record` of
/// `listendrop check`), and ~20x that in the kernel matrix's emulated guests, where every
/// test starts a daemon. So each name is scanned for once, and an enum where an
/// enumerator was found is searched first next time.
pub struct KernelBtf {
    btf: Btf,
    /// The type ids of each name looked up so far.
    ids: Mutex<HashMap<String, Vec<u32>>>,
    /// The ids of the enums where [`Self::enumerator`] found its enumerators.
    enums: Mutex<Vec<u32>>,
}

impl KernelBtf {
    /// Parses the BTF file at `path` (normally `/sys/kernel/btf/vmlinux`).
    pub fn open(path: &Path) -> Result<Self, BtfError> {
        if !path.exists() {
            return Err(BtfError::NotFound {
                path: path.to_owned(),
            });
        }
        // Mmap parses on demand what the few lookups need (ms, not ~150 ms and tens of
        // MB for the whole vmlinux BTF); sysfs BTF can be mmapped only since 6.16 or so,
        // so older kernels (ENODEV) read it whole.
        let btf = Btf::from_file_with_backend(path, btf_rs::Backend::Mmap)
            .or_else(|_| Btf::from_file(path))
            .map_err(|source| BtfError::Parse {
                path: path.to_owned(),
                source,
            })?;
        Ok(Self {
            btf,
            ids: Mutex::default(),
            enums: Mutex::default(),
        })
    }

    /// The ids of the types named `name` (empty if none), scanned for once.
    fn ids_by_name(&self, name: &str) -> Vec<u32> {
        let mut ids = self.ids.lock().unwrap_or_else(PoisonError::into_inner);
        ids.entry(name.to_owned())
            .or_insert_with(|| self.btf.resolve_ids_by_name(name).unwrap_or_default())
            .clone()
    }

    /// The types named `name` (empty if none).
    fn types_by_name(&self, name: &str) -> Vec<Type> {
        self.ids_by_name(name)
            .into_iter()
            .filter_map(|id| self.btf.resolve_type_by_id(id).ok())
            .collect()
    }

    /// The offset and size of `path` (e.g. `__sk_common.skc_num`) in `struct strukt`.
    /// Each path segment is looked up through anonymous struct/union members too.
    pub fn member(&self, strukt: &str, path: &str) -> Result<Member, BtfError> {
        let no_member = || BtfError::NoMember {
            strukt: strukt.to_owned(),
            member: path.to_owned(),
        };
        let mut current = self.named_struct(strukt)?;
        let mut offset_bits = 0u32;
        let mut found: Option<Type> = None;
        for segment in path.split('.') {
            // Descend into the previous segment's type.
            if let Some(previous) = found.take() {
                current = match self.strip(previous)? {
                    Type::Struct(s) | Type::Union(s) => s,
                    _ => return Err(no_member()),
                };
            }
            let (bits, ty, bitfield) =
                self.find_member(&current, segment)?.ok_or_else(no_member)?;
            if bitfield {
                return Err(BtfError::Layout {
                    strukt: strukt.to_owned(),
                    member: path.to_owned(),
                    found: "a bitfield".into(),
                    expected: "a byte-addressable field".into(),
                });
            }
            offset_bits += bits;
            found = Some(ty);
        }
        let ty = found.ok_or_else(no_member)?;
        Ok(Member {
            offset: offset_bits / 8,
            size: self.size_of(ty)?,
        })
    }

    /// Like [`Self::member`], and checks the member is `size` bytes wide (so that a kernel
    /// that changed its type is refused rather than misread).
    pub fn member_sized(&self, strukt: &str, path: &str, size: usize) -> Result<u32, BtfError> {
        let member = self.member(strukt, path)?;
        if member.size != size {
            return Err(BtfError::Layout {
                strukt: strukt.to_owned(),
                member: path.to_owned(),
                found: format!("{} bytes", member.size),
                expected: format!("{size} bytes"),
            });
        }
        Ok(member.offset)
    }

    /// The value of `enumerator` in `enum name`.
    pub fn enum_value(&self, name: &str, enumerator: &str) -> Result<u64, BtfError> {
        let missing = || BtfError::NoEnumerator {
            name: name.to_owned(),
            enumerator: enumerator.to_owned(),
        };
        for ty in self.types_by_name(name) {
            match ty {
                Type::Enum(e) => {
                    for m in &e.members {
                        if self.name_of(m)? == enumerator {
                            return Ok(u64::from(m.val()));
                        }
                    }
                }
                Type::Enum64(e) => {
                    for m in &e.members {
                        if self.name_of(m)? == enumerator {
                            return Ok(m.val());
                        }
                    }
                }
                _ => {}
            }
        }
        Err(missing())
    }

    /// The value of `enumerator` in whichever enum defines it, named or anonymous (the
    /// kernel's `LINUX_MIB_*` live in an anonymous enum).
    pub fn enumerator(&self, enumerator: &str) -> Result<u64, BtfError> {
        let (first, last) = self.btf.base().type_id_range();
        let seen = self
            .enums
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        for id in seen.into_iter().chain(first..=last) {
            let Ok(Type::Enum(e)) = self.btf.resolve_type_by_id(id) else {
                continue;
            };
            for m in &e.members {
                if self.name_of(m)? == enumerator {
                    let mut enums = self.enums.lock().unwrap_or_else(PoisonError::into_inner);
                    if !enums.contains(&id) {
                        enums.push(id);
                    }
                    return Ok(u64::from(m.val()));
                }
            }
        }
        Err(BtfError::NoEnumerator {
            name: "(any)".to_owned(),
            enumerator: enumerator.to_owned(),
        })
    }

    /// The number of parameters of function `name`, or `None` when BTF does not describe
    /// it (inlined, or in a module).
    pub fn function_params(&self, name: &str) -> Option<usize> {
        self.types_by_name(name)
            .into_iter()
            .find_map(|ty| match ty {
                Type::Func(f) => match self.btf.resolve_chained_type(&f).ok()? {
                    Type::FuncProto(p) => Some(p.parameters.len()),
                    _ => None,
                },
                _ => None,
            })
    }

    /// The BTF type id of the function `name` (what fentry/fexit attach to).
    pub fn func_id(&self, name: &str) -> Option<u32> {
        self.id_of(name, |ty| matches!(ty, Type::Func(_)))
    }

    /// The BTF type id of the typedef `name` (a tracepoint's `btf_trace_<event>`, what
    /// tp_btf attaches to).
    pub fn typedef_id(&self, name: &str) -> Option<u32> {
        self.id_of(name, |ty| matches!(ty, Type::Typedef(_)))
    }

    fn id_of(&self, name: &str, is: impl Fn(&Type) -> bool) -> Option<u32> {
        self.ids_by_name(name)
            .into_iter()
            .find(|&id| self.btf.resolve_type_by_id(id).is_ok_and(|ty| is(&ty)))
    }

    /// The number of parameters of the function pointer typedef `name` (a tracepoint's
    /// `btf_trace_<name>`: its context, then the tracepoint's arguments), or `None`.
    pub fn typedef_params(&self, name: &str) -> Option<usize> {
        self.types_by_name(name)
            .into_iter()
            .find_map(|ty| match ty {
                Type::Typedef(t) => match self.btf.resolve_chained_type(&t).ok()? {
                    Type::Ptr(p) => match self.btf.resolve_chained_type(&p).ok()? {
                        Type::FuncProto(f) => Some(f.parameters.len()),
                        _ => None,
                    },
                    _ => None,
                },
                _ => None,
            })
    }

    fn named_struct(&self, name: &str) -> Result<btf_rs::Struct, BtfError> {
        self.types_by_name(name)
            .into_iter()
            .find_map(|ty| match ty {
                // A forward declaration or an empty struct is not the definition.
                Type::Struct(s) | Type::Union(s) if !s.members.is_empty() => Some(s),
                _ => None,
            })
            .ok_or_else(|| BtfError::NoStruct {
                name: name.to_owned(),
            })
    }

    /// Finds `name` among the members of `s`, recursing into anonymous members.
    /// Returns (bit offset from the start of `s`, member type, is bitfield).
    fn find_member(
        &self,
        s: &btf_rs::Struct,
        name: &str,
    ) -> Result<Option<(u32, Type, bool)>, BtfError> {
        for m in &s.members {
            let member_name = self.name_of(m)?;
            let ty = self
                .btf
                .resolve_chained_type(m)
                .map_err(|e| BtfError::Other(e.to_string()))?;
            let bitfield = m.bitfield_size().is_some_and(|bits| bits != 0);
            if member_name == name {
                return Ok(Some((m.bit_offset(), ty, bitfield)));
            }
            if member_name.is_empty() {
                if let Type::Struct(inner) | Type::Union(inner) = self.strip(ty)? {
                    if let Some((bits, ty, bitfield)) = self.find_member(&inner, name)? {
                        return Ok(Some((m.bit_offset() + bits, ty, bitfield)));
                    }
                }
            }
        }
        Ok(None)
    }

    /// Follows typedefs and qualifiers to the underlying type.
    fn strip(&self, mut ty: Type) -> Result<Type, BtfError> {
        // Bounded: BTF chains are short; a loop guards against a malformed file.
        for _ in 0..32 {
            let next = match &ty {
                Type::Typedef(t) => self.btf.resolve_chained_type(t),
                Type::Volatile(t) | Type::Const(t) | Type::Restrict(t) => {
                    self.btf.resolve_chained_type(t)
                }
                Type::TypeTag(t) => self.btf.resolve_chained_type(t),
                _ => return Ok(ty),
            };
            ty = next.map_err(|e| BtfError::Other(e.to_string()))?;
        }
        Err(BtfError::Other("type chain too long".into()))
    }

    fn size_of(&self, ty: Type) -> Result<usize, BtfError> {
        Ok(match self.strip(ty)? {
            Type::Int(i) => i.size(),
            Type::Ptr(_) => std::mem::size_of::<usize>(),
            Type::Struct(s) | Type::Union(s) => s.size(),
            Type::Enum(e) => e.size(),
            Type::Enum64(e) => e.size(),
            Type::Float(f) => f.size(),
            Type::Array(a) => {
                let elem = self
                    .btf
                    .resolve_chained_type(&a)
                    .map_err(|e| BtfError::Other(e.to_string()))?;
                a.len() * self.size_of(elem)?
            }
            other => return Err(BtfError::Other(format!("no size for a {}", other.name()))),
        })
    }

    fn name_of(&self, ty: &dyn BtfType) -> Result<String, BtfError> {
        if ty.get_name_offset() == Some(0) {
            return Ok(String::new());
        }
        self.btf
            .resolve_name(ty)
            .map_err(|e| BtfError::Other(e.to_string()))
    }
}

#[cfg(test)]
mod tests;
