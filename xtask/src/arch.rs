//! The CPU architectures listendrop is built, packaged and tested for, and how each is
//! named by Debian, Rust, QEMU and `file`.

use std::fmt;

/// A Debian architecture listendrop ships for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, clap::ValueEnum)]
pub enum Arch {
    Amd64,
    Arm64,
}

impl Arch {
    /// Every architecture, in the order runs and reports list them.
    pub const ALL: [Self; 2] = [Self::Amd64, Self::Arm64];

    /// The architecture this xtask was built for (and runs on).
    pub const fn host() -> Self {
        if cfg!(target_arch = "aarch64") {
            Self::Arm64
        } else {
            Self::Amd64
        }
    }

    /// Debian's name (`dpkg --print-architecture`, package name suffixes).
    pub const fn debian(self) -> &'static str {
        match self {
            Self::Amd64 => "amd64",
            Self::Arm64 => "arm64",
        }
    }

    /// The Rust target of static builds: musl links everything in. Linking for a foreign
    /// architecture needs no cross C toolchain: `.cargo/config.toml` names `rust-lld`.
    pub const fn musl_target(self) -> &'static str {
        match self {
            Self::Amd64 => "x86_64-unknown-linux-musl",
            Self::Arm64 => "aarch64-unknown-linux-musl",
        }
    }

    /// The Rust target of this architecture's release build, as the .deb ships it and the
    /// kernel matrix's guests run it: `None` for the host's own (a native build, dynamically
    /// linked with the host's glibc), the static musl target for another one.
    pub fn release_target(self) -> Option<&'static str> {
        (self != Self::host()).then(|| self.musl_target())
    }

    /// The machine as `file` describes an executable of this architecture.
    pub const fn file_machine(self) -> &'static str {
        match self {
            Self::Amd64 => "x86-64",
            Self::Arm64 => "ARM aarch64",
        }
    }

    /// Debian's multiarch triplet: where its packages put shared libraries.
    pub const fn multiarch(self) -> &'static str {
        match self {
            Self::Amd64 => "x86_64-linux-gnu",
            Self::Arm64 => "aarch64-linux-gnu",
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `pad`: table columns align on it.
        f.pad(self.debian())
    }
}
