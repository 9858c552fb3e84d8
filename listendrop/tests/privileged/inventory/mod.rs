//! The listener inventory against the real system (root): sock_diag, owners, namespaces,
//! sysctls and kernel counters compared with `ss`, `/proc`, `stat` and `nstat`.

mod collect;
mod counters;
mod namespaces;
mod owners;
mod sockdiag;
mod sysctls;
