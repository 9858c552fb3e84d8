//! What the kernel counts about our own programs that aya does not expose: each program's
//! run time and run count (while `kernel.bpf_stats_enabled=1`) and its misses — runs the
//! kernel skipped (`recursion_misses`: a tracing program's recursion guard, 5.12+; kprobe
//! and classic tracepoint programs skipped while another BPF program ran on the CPU, 6.7+)
//! and kprobe hits lost (the kprobe link's `missed`, 6.7+: nested kprobes, kretprobe
//! instances exhausted).
//!
//! The `bpf(2)` commands used here are stable ABI; the structures are aya-obj's bindings
//! of the UAPI header, filled up to the size this kernel knows.

use std::{
    ffi::CString,
    io,
    mem::{offset_of, size_of},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    path::Path,
};

use aya_obj::generated::{
    bpf_cmd, bpf_link_info, bpf_link_type, bpf_perf_event_type, bpf_prog_info,
};

/// `union bpf_attr` for `BPF_OBJ_GET_INFO_BY_FD` (`info` member, 4.13+).
#[repr(C)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// `union bpf_attr` for `BPF_*_GET_FD_BY_ID` (`prog_id`/`link_id`, `next_id`,
/// `open_flags`).
#[repr(C)]
struct IdAttr {
    id: u32,
    next_id: u32,
    open_flags: u32,
}

/// `union bpf_attr` for `BPF_OBJ_GET` (`pathname`, `bpf_fd`, `file_flags`).
#[repr(C)]
struct PathAttr {
    pathname: u64,
    bpf_fd: u32,
    file_flags: u32,
}

/// `bpf(cmd, attr, sizeof attr)`; a non-negative result.
fn bpf<T>(cmd: bpf_cmd, attr: &mut T) -> io::Result<i64> {
    // SAFETY: `attr` is a live, initialised repr(C) prefix of `union bpf_attr` of the
    // size passed; the kernel reads (and for info, writes through the pointer inside) no
    // more than that.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd as libc::c_long,
            std::ptr::from_mut(attr),
            size_of::<T>(),
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn owned(fd: i64) -> io::Result<OwnedFd> {
    let fd = i32::try_from(fd).map_err(|_| io::Error::from(io::ErrorKind::InvalidData))?;
    // SAFETY: the kernel just returned this new descriptor, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A descriptor of program `id` (CAP_SYS_ADMIN).
pub fn program_fd(id: u32) -> io::Result<OwnedFd> {
    let mut attr = IdAttr {
        id,
        next_id: 0,
        open_flags: 0,
    };
    owned(bpf(bpf_cmd::BPF_PROG_GET_FD_BY_ID, &mut attr)?)
}

/// A descriptor of link `id` (CAP_SYS_ADMIN).
pub fn link_fd(id: u32) -> io::Result<OwnedFd> {
    let mut attr = IdAttr {
        id,
        next_id: 0,
        open_flags: 0,
    };
    owned(bpf(bpf_cmd::BPF_LINK_GET_FD_BY_ID, &mut attr)?)
}

/// A descriptor of the object pinned at `path`.
pub fn pinned_fd(path: &Path) -> io::Result<OwnedFd> {
    let c = CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let mut attr = PathAttr {
        pathname: c.as_ptr() as u64,
        bpf_fd: 0,
        file_flags: 0,
    };
    owned(bpf(bpf_cmd::BPF_OBJ_GET, &mut attr)?)
}

/// `BPF_OBJ_GET_INFO_BY_FD` into a zeroed `T`; returns it and the size the kernel filled.
fn info<T>(fd: &OwnedFd) -> io::Result<(T, usize)> {
    // SAFETY: T is one of the UAPI info structs: integers and unions of integers, for
    // which all-zero is valid.
    let mut out: T = unsafe { std::mem::zeroed() };
    let mut attr = InfoAttr {
        bpf_fd: u32::try_from(fd.as_raw_fd())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?,
        info_len: u32::try_from(size_of::<T>()).unwrap_or(u32::MAX),
        info: std::ptr::from_mut(&mut out) as u64,
    };
    bpf(bpf_cmd::BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    Ok((out, attr.info_len as usize))
}

/// A program's own statistics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProgramCounts {
    /// Runs counted while `kernel.bpf_stats_enabled=1`.
    pub runs: u64,
    /// Nanoseconds spent in those runs.
    pub run_ns: u64,
    /// Runs the kernel skipped; `None` before Linux 5.12 (no such field).
    pub misses: Option<u64>,
}

/// The statistics of the program behind `fd`.
pub fn program_counts(fd: &OwnedFd) -> io::Result<ProgramCounts> {
    let (info, len) = info::<bpf_prog_info>(fd)?;
    let has_misses = len >= offset_of!(bpf_prog_info, recursion_misses) + size_of::<u64>();
    Ok(ProgramCounts {
        runs: info.run_cnt,
        run_ns: info.run_time_ns,
        misses: has_misses.then_some(info.recursion_misses),
    })
}

/// The program id and link id of the link behind `fd`.
pub fn link_ids(fd: &OwnedFd) -> io::Result<(u32, u32)> {
    let (info, _) = info::<bpf_link_info>(fd)?;
    Ok((info.prog_id, info.id))
}

/// Kprobe hits the kprobe or kretprobe behind link `fd` missed (6.7+; `None` for another
/// kind of link, or a kernel that does not say).
pub fn kprobe_missed(fd: &OwnedFd) -> io::Result<Option<u64>> {
    let (info, _) = info::<bpf_link_info>(fd)?;
    if info.type_ != bpf_link_type::BPF_LINK_TYPE_PERF_EVENT as u32 {
        return Ok(None);
    }
    // SAFETY: a perf event link's info is the `perf_event` member of the union.
    let event = unsafe { info.__bindgen_anon_1.perf_event };
    let kprobe = [
        bpf_perf_event_type::BPF_PERF_EVENT_KPROBE as u32,
        bpf_perf_event_type::BPF_PERF_EVENT_KRETPROBE as u32,
    ];
    if !kprobe.contains(&event.type_) {
        return Ok(None);
    }
    // SAFETY: a kprobe's details are the `kprobe` member of that union.
    Ok(Some(unsafe { event.__bindgen_anon_1.kprobe.missed }))
}
