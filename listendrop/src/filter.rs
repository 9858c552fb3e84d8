//! Which listeners the user wants reported (`--include-*`, `--exclude-*`).

use crate::{
    cli::RunArgs,
    listener::{ListenerId, Netns},
};

/// Namespace and port filters; empty include lists mean "all".
#[derive(Clone, Debug, Default)]
pub struct Filter {
    include_netns: Vec<u32>,
    exclude_netns: Vec<u32>,
    include_ports: Vec<u16>,
    exclude_ports: Vec<u16>,
}

impl Filter {
    /// The filter the options describe.
    pub fn from_args(args: &RunArgs) -> Self {
        Self {
            include_netns: args.include_netns.clone(),
            exclude_netns: args.exclude_netns.clone(),
            include_ports: args.include_ports.clone(),
            exclude_ports: args.exclude_ports.clone(),
        }
    }

    /// Whether per-namespace series of `netns` are reported.
    pub fn allows_netns(&self, netns: Netns) -> bool {
        (self.include_netns.is_empty() || self.include_netns.contains(&netns.0))
            && !self.exclude_netns.contains(&netns.0)
    }

    /// Whether listener `id` is reported.
    pub fn allows(&self, id: &ListenerId) -> bool {
        self.allows_netns(id.netns)
            && (self.include_ports.is_empty() || self.include_ports.contains(&id.port))
            && !self.exclude_ports.contains(&id.port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(netns: u32, port: u16) -> ListenerId {
        ListenerId {
            netns: Netns(netns),
            addr: "0.0.0.0".parse().unwrap(),
            port,
        }
    }

    #[test]
    fn includes_then_excludes() {
        let all = Filter::default();
        assert!(all.allows(&id(1, 80)));
        let f = Filter {
            include_netns: vec![1, 2],
            exclude_ports: vec![22],
            ..Filter::default()
        };
        assert!(f.allows(&id(1, 80)));
        assert!(!f.allows(&id(3, 80)));
        assert!(!f.allows(&id(1, 22)));
        let f = Filter {
            include_ports: vec![443],
            exclude_netns: vec![2],
            ..Filter::default()
        };
        assert!(f.allows(&id(1, 443)));
        assert!(!f.allows(&id(2, 443)));
        assert!(!f.allows(&id(1, 80)));
    }
}
