//! Password hashes as MySQL stores them for `mysql_native_password`.
//!
//! A user's hash is SHA1(SHA1(password)) ("stage 2"). It is enough to check a
//! client's proof and, with the proof, to recover SHA1(password) ("stage 1"),
//! which is what baton needs to log in to the backend as the same user. So the
//! config never has to hold a plaintext password.

use sha1::{Digest, Sha1};

/// SHA1(SHA1(password)), or `None` for an empty password (which MySQL stores as "").
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordHash(pub Option<[u8; 20]>);

impl std::fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PasswordHash(..)")
    }
}

impl PasswordHash {
    /// Hash a plaintext password.
    pub fn from_plain(password: &str) -> Self {
        if password.is_empty() {
            return PasswordHash(None);
        }
        let stage1: [u8; 20] = Sha1::digest(password.as_bytes()).into();
        PasswordHash(Some(Sha1::digest(stage1).into()))
    }

    /// Parse the MySQL form `*` + 40 hex digits (or "" for no password).
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.is_empty() {
            return Ok(PasswordHash(None));
        }
        let hex = text.strip_prefix('*').ok_or_else(|| "password_hash must start with '*' (the MySQL form)".to_string())?;
        if hex.len() != 40 {
            return Err("password_hash must be '*' followed by 40 hex digits".into());
        }
        let mut out = [0u8; 20];
        for (i, chunk) in hex.as_bytes().chunks(2).enumerate() {
            let s = std::str::from_utf8(chunk).map_err(|_| "password_hash is not hex")?;
            out[i] = u8::from_str_radix(s, 16).map_err(|_| "password_hash is not hex".to_string())?;
        }
        Ok(PasswordHash(Some(out)))
    }

    /// The MySQL text form, `*` + upper-case hex.
    pub fn to_mysql_string(&self) -> String {
        match &self.0 {
            None => String::new(),
            Some(h) => {
                let mut s = String::from("*");
                for b in h {
                    s.push_str(&format!("{b:02X}"));
                }
                s
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_hash_of_app() {
        // SELECT PASSWORD('app') on MariaDB.
        let h = PasswordHash::from_plain("app");
        assert_eq!(h.to_mysql_string(), "*5BCB3E6AC345B435C7C2E6B7949A04CE6F6563D3");
        assert_eq!(PasswordHash::parse(&h.to_mysql_string()).unwrap(), h);
    }

    #[test]
    fn bad_hashes_are_refused() {
        assert!(PasswordHash::parse("5BCB").is_err());
        assert!(PasswordHash::parse("*XYZ").is_err());
        assert!(PasswordHash::parse("*5BCB3E6AC345B435C7C2E6B7949A04CE6F6563ZZ").is_err());
        assert_eq!(PasswordHash::parse("").unwrap(), PasswordHash(None));
    }
}
