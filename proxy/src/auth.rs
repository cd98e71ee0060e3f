//! What baton proves to backends with, and mysql_native_password both ways.
//!
//! A session keeps a [`BackendSecret`]: stage 1 of a native password (recovered
//! from the client's proof, below) or the password itself (given by a
//! `caching_sha2_password` full authentication, or the user's
//! `backend_password_file`). [`BackendSecret::answer`] answers whichever plugin
//! the backend asks for: `mysql_native_password` from either, `client_ed25519` and
//! `caching_sha2_password` from a password only.
//!
//! A client proves it knows the password with
//! `proof = SHA1(pw) XOR SHA1(nonce + SHA1(SHA1(pw)))`. Knowing the stored
//! `SHA1(SHA1(pw))` (stage 2), baton checks the proof and recovers `SHA1(pw)`
//! (stage 1), which is exactly what it needs to answer the backend's own nonce.
//! So baton logs in to the backend as the same user without ever holding the
//! plaintext password (the ProxySQL technique).

use baton_control::credentials::PasswordHash;
use rand::Rng;
use sha1::{Digest, Sha1};

pub const NATIVE_PLUGIN: &[u8] = b"mysql_native_password";

/// SHA1(password): what baton keeps for the session to log in to backends.
/// `None` means the empty password.
#[derive(Clone, PartialEq, Eq)]
pub struct Stage1(pub Option<[u8; 20]>);

impl std::fmt::Debug for Stage1 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Stage1(..)")
    }
}

pub const SHA2_PLUGIN: &[u8] = b"caching_sha2_password";
pub const ED25519_PLUGIN: &[u8] = b"client_ed25519";

/// A plaintext password, wiped from memory when dropped; never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(zeroize::Zeroizing<Vec<u8>>);

impl Password {
    pub fn new(bytes: Vec<u8>) -> Self {
        Password(zeroize::Zeroizing::new(bytes))
    }
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(..)")
    }
}

/// What baton logs in to backends with, as the client's user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendSecret {
    /// SHA1(password): answers mysql_native_password only.
    Stage1(Stage1),
    /// The password: answers every plugin baton knows.
    Password(Password),
}

impl BackendSecret {
    /// The auth data answering `plugin`'s `nonce` (the first 20 bytes for the
    /// SHA-based plugins, 32 for ed25519). Err names what cannot be answered.
    pub fn answer(&self, plugin: &[u8], nonce: &[u8]) -> Result<Vec<u8>, String> {
        let n20 = &nonce[..nonce.len().min(20)];
        match (plugin, self) {
            (NATIVE_PLUGIN, BackendSecret::Stage1(s1)) => Ok(proof_for(s1, n20)),
            (NATIVE_PLUGIN, BackendSecret::Password(p)) => {
                Ok(mysql_common::scramble::scramble_native(n20, p.bytes()).map(Vec::from).unwrap_or_default())
            }
            (SHA2_PLUGIN, BackendSecret::Password(p)) => {
                Ok(mysql_common::scramble::scramble_sha256(n20, p.bytes()).map(Vec::from).unwrap_or_default())
            }
            (ED25519_PLUGIN, BackendSecret::Password(p)) => {
                Ok(mysql_common::scramble::create_response_for_ed25519(p.bytes(), &nonce[..nonce.len().min(32)]).to_vec())
            }
            (plugin, _) => Err(format!(
                "the backend asks for auth plugin {:?}, which needs the password: set backend_password_file for this user",
                String::from_utf8_lossy(plugin)
            )),
        }
    }
}

/// 20 random printable bytes (no NUL, no '$'), as MySQL servers generate them.
pub fn new_nonce() -> [u8; 20] {
    let mut rng = rand::rng();
    let mut n = [0u8; 20];
    for b in &mut n {
        *b = loop {
            let c = rng.random_range(0x21u8..0x7f);
            if c != b'$' {
                break c;
            }
        };
    }
    n
}

fn sha1_2(a: &[u8], b: &[u8]) -> [u8; 20] {
    let mut h = Sha1::new();
    h.update(a);
    h.update(b);
    h.finalize().into()
}

/// Check a client's proof against the stored hash; on success return stage 1.
pub fn verify(hash: &PasswordHash, nonce: &[u8], proof: &[u8]) -> Option<Stage1> {
    match &hash.0 {
        None => proof.is_empty().then_some(Stage1(None)),
        Some(stage2) => {
            if proof.len() != 20 {
                return None;
            }
            let mask = sha1_2(nonce, stage2);
            let mut stage1 = [0u8; 20];
            for i in 0..20 {
                stage1[i] = proof[i] ^ mask[i];
            }
            let check: [u8; 20] = Sha1::digest(stage1).into();
            // Constant-time compare.
            let diff = check.iter().zip(stage2).fold(0u8, |acc, (a, b)| acc | (a ^ b));
            (diff == 0).then_some(Stage1(Some(stage1)))
        }
    }
}

/// Does `password` have the stage-2 hash `hash`? (Constant-time compare.)
pub fn native_hash_matches(hash: &PasswordHash, password: &[u8]) -> bool {
    match &hash.0 {
        None => password.is_empty(),
        Some(stage2) => {
            let s1: [u8; 20] = Sha1::digest(password).into();
            let s2: [u8; 20] = Sha1::digest(s1).into();
            !password.is_empty() && s2.iter().zip(stage2).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
        }
    }
}

/// The proof for a backend's `nonce`, from stage 1.
pub fn proof_for(stage1: &Stage1, nonce: &[u8]) -> Vec<u8> {
    match &stage1.0 {
        None => Vec::new(),
        Some(s1) => {
            let stage2: [u8; 20] = Sha1::digest(s1).into();
            let mask = sha1_2(nonce, &stage2);
            s1.iter().zip(mask).map(|(a, b)| a ^ b).collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proof_verifies_and_recovers_stage1() {
        let hash = PasswordHash::from_plain("s3cret");
        let nonce = new_nonce();
        let proof = mysql_common::scramble::scramble_native(&nonce, b"s3cret").unwrap();
        let s1 = verify(&hash, &nonce, &proof).expect("right password");
        // The recovered stage 1 answers a different nonce exactly as the password would.
        let other = new_nonce();
        assert_eq!(proof_for(&s1, &other), mysql_common::scramble::scramble_native(&other, b"s3cret").unwrap());
        let wrong = mysql_common::scramble::scramble_native(&nonce, b"nope").unwrap();
        assert!(verify(&hash, &nonce, &wrong).is_none());
        assert!(verify(&hash, &nonce, b"short").is_none());
        assert!(verify(&PasswordHash(None), &nonce, b"").is_some());
        assert!(verify(&PasswordHash(None), &nonce, &proof).is_none());
    }
}
