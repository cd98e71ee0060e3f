//! mysql_native_password, both ways.
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
