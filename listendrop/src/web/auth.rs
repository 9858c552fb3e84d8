//! Basic authentication against the bcrypt hashes of `basic_auth_users`, as
//! exporter-toolkit does it (`web/handler.go`, `web/cache.go`):
//! - an unknown user is checked against a fixed hash, so that it costs the same bcrypt as
//!   a known one and timing does not tell which users exist;
//! - bcrypt runs one at a time, on the blocking pool (about 70 ms at cost 10): the async
//!   workers keep serving, and a flood of guesses cannot take every core;
//! - each verdict is cached (100 entries, evicted ten at a time), so that a scrape every
//!   few seconds does not cost a bcrypt each time. The cache is keyed by an HMAC-SHA256,
//!   under a key drawn at start, of (user, hash, password): no password is kept in memory,
//!   a changed hash is a different entry, and since the key is secret the time a lookup
//!   takes says nothing about the password. The comparison of the hash itself is bcrypt's
//!   constant-time one.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        atomic::{AtomicU64, Ordering},
        Mutex,
    },
};

use base64::Engine as _;
use ring::hmac;

/// bcrypt of "fakepassword" at cost 10: exporter-toolkit's stand-in for unknown users.
const UNKNOWN_USER_HASH: &str = "$2y$10$QOauhQNbBCuQDKes6eFzPeMqBSjb7Mr5DUmpZ/VcEd00UAV/LDeSi";
/// Verdicts kept.
const CACHE_SIZE: usize = 100;

/// The user and password of an `Authorization: Basic` header (Go's `Request.BasicAuth`):
/// the scheme case-insensitive, standard base64, split at the first colon.
pub fn basic_credentials(header: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    const PREFIX: &[u8] = b"Basic ";
    if header.len() < PREFIX.len() || !header[..PREFIX.len()].eq_ignore_ascii_case(PREFIX) {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(&header[PREFIX.len()..])
        .ok()?;
    let colon = decoded.iter().position(|&b| b == b':')?;
    Some((decoded[..colon].to_vec(), decoded[colon + 1..].to_vec()))
}

/// Checks credentials, with the cache and the one-at-a-time bcrypt.
pub struct Authenticator {
    key: hmac::Key,
    cache: Mutex<HashMap<[u8; 32], bool>>,
    bcrypt_turn: tokio::sync::Mutex<()>,
    bcrypt_runs: AtomicU64,
}

impl Default for Authenticator {
    fn default() -> Self {
        Self::new()
    }
}

impl Authenticator {
    /// A fresh cache under a random key.
    pub fn new() -> Self {
        let rng = ring::rand::SystemRandom::new();
        let key = hmac::Key::generate(hmac::HMAC_SHA256, &rng)
            .expect("the kernel's random number generator failed");
        Self {
            key,
            cache: Mutex::new(HashMap::new()),
            bcrypt_turn: tokio::sync::Mutex::new(()),
            bcrypt_runs: AtomicU64::new(0),
        }
    }

    /// Whether a request with this `Authorization` header may pass: always when `users`
    /// is empty, otherwise only with a user of `users` and its password.
    pub async fn allows(
        &self,
        users: &BTreeMap<String, String>,
        authorization: Option<&[u8]>,
    ) -> bool {
        if users.is_empty() {
            return true;
        }
        let Some((user, password)) = authorization.and_then(basic_credentials) else {
            return false;
        };
        let known = std::str::from_utf8(&user)
            .ok()
            .and_then(|user| users.get(user));
        let hash = known.map_or(UNKNOWN_USER_HASH, String::as_str).to_owned();
        let tag = self.tag(&user, &hash, &password);
        if let Some(&ok) = crate::util::lock(&self.cache).get(&tag) {
            return ok;
        }
        let ok = {
            let _turn = self.bcrypt_turn.lock().await;
            // A request that waited for its turn may find its answer cached meanwhile.
            if let Some(&ok) = crate::util::lock(&self.cache).get(&tag) {
                return ok;
            }
            self.bcrypt_runs.fetch_add(1, Ordering::Relaxed);
            tokio::task::spawn_blocking(move || bcrypt::verify(&password, &hash).unwrap_or(false))
                .await
                .unwrap_or(false)
        } && known.is_some();
        let mut cache = crate::util::lock(&self.cache);
        if cache.len() >= CACHE_SIZE {
            // HashMap's order is seeded at random: these are arbitrary entries.
            let evict: Vec<[u8; 32]> = cache.keys().take(CACHE_SIZE / 10).copied().collect();
            for key in evict {
                cache.remove(&key);
            }
        }
        cache.insert(tag, ok);
        ok
    }

    /// How many bcrypt checks ran (the rest came from the cache).
    pub fn bcrypt_runs(&self) -> u64 {
        self.bcrypt_runs.load(Ordering::Relaxed)
    }

    fn tag(&self, user: &[u8], hash: &str, password: &[u8]) -> [u8; 32] {
        let mut ctx = hmac::Context::with_key(&self.key);
        // Length-prefixed, so that no two triples make the same message.
        for part in [user, hash.as_bytes(), password] {
            ctx.update(&(part.len() as u64).to_le_bytes());
            ctx.update(part);
        }
        let mut tag = [0; 32];
        tag.copy_from_slice(ctx.sign().as_ref());
        tag
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(user: &str, password: &str) -> Vec<u8> {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        format!("Basic {token}").into_bytes()
    }

    fn users() -> BTreeMap<String, String> {
        // Cost 4, the lowest, keeps the test fast.
        BTreeMap::from([
            ("prometheus".to_owned(), bcrypt::hash("s3cret", 4).unwrap()),
            ("other".to_owned(), bcrypt::hash("other", 4).unwrap()),
        ])
    }

    fn check(auth: &Authenticator, users: &BTreeMap<String, String>, header: &[u8]) -> bool {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(auth.allows(users, Some(header)))
    }

    #[test]
    fn the_right_user_and_password_pass() {
        let auth = Authenticator::new();
        assert!(check(&auth, &users(), &header("prometheus", "s3cret")));
        // A colon in the password is the password's.
        let users = BTreeMap::from([("u".to_owned(), bcrypt::hash("a:b", 4).unwrap())]);
        assert!(check(&auth, &users, &header("u", "a:b")));
        // The scheme is case-insensitive, as in Go.
        let token = base64::engine::general_purpose::STANDARD.encode("u:a:b");
        assert!(check(&auth, &users, format!("bAsIc {token}").as_bytes()));
    }

    #[test]
    fn wrong_user_wrong_password_and_malformed_headers_fail() {
        let auth = Authenticator::new();
        let users = users();
        assert!(!check(&auth, &users, &header("prometheus", "wrong")));
        assert!(!check(&auth, &users, &header("prometheus", "")));
        assert!(!check(&auth, &users, &header("Prometheus", "s3cret")));
        assert!(!check(&auth, &users, &header("nobody", "s3cret")));
        // Another user's password is not this one's.
        assert!(!check(&auth, &users, &header("prometheus", "other")));
        // The unknown user's stand-in hash is "fakepassword": still refused.
        assert!(!check(&auth, &users, &header("nobody", "fakepassword")));
        for bad in [
            &b""[..],
            b"Basic",
            b"Basic ",
            b"Basic !!!notbase64",
            b"Bearer cHJvbWV0aGV1czpzM2NyZXQ=",
            // "prometheus" without a colon.
            b"Basic cHJvbWV0aGV1cw==",
        ] {
            assert!(
                !check(&auth, &users, bad),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        assert!(!runtime.block_on(auth.allows(&users, None)), "no header");
        assert!(
            runtime.block_on(auth.allows(&BTreeMap::new(), None)),
            "no users: open"
        );
    }

    #[test]
    fn unknown_users_cost_a_bcrypt_too_and_verdicts_are_cached() {
        let auth = Authenticator::new();
        let users = users();
        assert!(!check(&auth, &users, &header("nobody", "x")));
        assert_eq!(auth.bcrypt_runs(), 1, "an unknown user costs a bcrypt");
        for _ in 0..5 {
            assert!(check(&auth, &users, &header("prometheus", "s3cret")));
            assert!(!check(&auth, &users, &header("prometheus", "wrong")));
        }
        assert_eq!(auth.bcrypt_runs(), 3, "one bcrypt per distinct triple");
        // A new hash for the user (a reloaded file) is checked again.
        let rehashed =
            BTreeMap::from([("prometheus".to_owned(), bcrypt::hash("s3cret", 4).unwrap())]);
        assert!(check(&auth, &rehashed, &header("prometheus", "s3cret")));
        assert_eq!(auth.bcrypt_runs(), 4);
        // The cache stays bounded.
        for i in 0..(2 * CACHE_SIZE) {
            check(&auth, &users, &header("prometheus", &format!("guess{i}")));
        }
        assert!(crate::util::lock(&auth.cache).len() <= CACHE_SIZE);
    }
}
