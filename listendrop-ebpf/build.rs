//! Building this crate has an undeclared dependency on the `bpf-linker` binary. Rebuild
//! when it changes (for example after `cargo xtask` reinstalls it for another LLVM).
fn main() {
    match which::which("bpf-linker") {
        Ok(path) => println!("cargo:rerun-if-changed={}", path.display()),
        // The host build of this crate's (empty) library does not need it; the BPF build
        // fails later with a clear message from listendrop/build.rs.
        Err(_) => println!("cargo:rerun-if-env-changed=PATH"),
    }
}
