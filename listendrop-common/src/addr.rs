//! An IP address as the kernel stores it in sockets and headers.

use core::cmp::Ordering;

/// 16 bytes in network order: IPv4 in the first 4 (the rest zero), IPv6 in all 16; all
/// zero for a wildcard. Held as four 32-bit words in memory order, so the eBPF side copies
/// and compares it by words (LLVM's BPF backend moves a byte array byte by byte: ~60
/// instructions on the drop path); the bytes in memory are the same either way, and the
/// daemon sees them through [`Addr::octets`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Addr(pub [u32; 4]);

impl Addr {
    /// All zero: no address, or the wildcard.
    pub const ZERO: Self = Self([0; 4]);

    /// An IPv4 address from its word as loaded from a header or socket (network order
    /// in memory).
    #[inline(always)]
    pub const fn v4(word: u32) -> Self {
        Self([word, 0, 0, 0])
    }

    /// The address from its 16 bytes, network order.
    pub fn from_octets(octets: [u8; 16]) -> Self {
        let mut words = [0; 4];
        for (word, bytes) in words.iter_mut().zip(octets.chunks_exact(4)) {
            *word = u32::from_ne_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        }
        Self(words)
    }

    /// An IPv4 address from its 4 bytes, network order.
    pub fn from_v4_octets(octets: [u8; 4]) -> Self {
        Self::v4(u32::from_ne_bytes(octets))
    }

    /// Its 16 bytes, network order (as they lie in memory).
    pub fn octets(&self) -> [u8; 16] {
        let mut octets = [0; 16];
        for (bytes, word) in octets.chunks_exact_mut(4).zip(self.0) {
            bytes.copy_from_slice(&word.to_ne_bytes());
        }
        octets
    }
}

/// Ordered as the bytes are (as the addresses are), not as the words.
impl Ord for Addr {
    fn cmp(&self, other: &Self) -> Ordering {
        self.octets().cmp(&other.octets())
    }
}

impl PartialOrd for Addr {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn octets_round_trip_in_memory_order() {
        let octets: [u8; 16] = core::array::from_fn(|i| i as u8 + 1);
        let addr = Addr::from_octets(octets);
        assert_eq!(addr.octets(), octets);
        // SAFETY: [u32; 4] viewed as its 16 bytes.
        let raw = unsafe { core::mem::transmute::<[u32; 4], [u8; 16]>(addr.0) };
        assert_eq!(raw, octets, "the bytes in memory are the address's bytes");
        assert_eq!(
            Addr::from_v4_octets([10, 0, 0, 1]).octets()[..4],
            [10, 0, 0, 1]
        );
        assert_eq!(Addr::from_v4_octets([10, 0, 0, 1]).octets()[4..], [0; 12]);
    }

    #[test]
    fn ordered_as_bytes() {
        let low = Addr::from_v4_octets([1, 0, 0, 255]);
        let high = Addr::from_v4_octets([2, 0, 0, 0]);
        assert!(low < high);
    }
}
