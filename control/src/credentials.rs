//! Stored credentials, in the text forms MySQL and MariaDB keep in their user
//! tables, one type per authentication method. None of them holds a plaintext
//! password, and none prints its secret part in `Debug`.
//!
//! - [`PasswordHash`], `mysql_native_password`: a user's hash is SHA1(SHA1(password))
//!   ("stage 2"). It is enough to check a client's proof and, with the proof, to
//!   recover SHA1(password) ("stage 1"), which is what baton needs to log in to the
//!   backend as the same user. So the config never has to hold a plaintext password.
//! - [`Sha2Hash`], MySQL's `caching_sha2_password`: `$A$005$` + 20-byte salt + 43
//!   characters of SHA-256 crypt (Drepper's `$5$` scheme). It checks a plaintext
//!   password (the "full authentication" path, over TLS or RSA); it cannot check a
//!   scramble, and it gives nothing to log in to a backend with.
//! - [`Ed25519Key`], MariaDB's `ed25519` plugin: base64 of the Ed25519 public key
//!   MariaDB derives from the password. It checks a client's signature of the
//!   server's nonce; [`ed25519_sign`] makes that signature from a password.
//!
//! All three are pure functions of their inputs: no I/O, no randomness (a caller
//! that generates a hash passes its own random salt).

use ed25519_dalek::hazmat::{raw_sign, ExpandedSecretKey};
use ed25519_dalek::{Signature, VerifyingKey};
use sha1::{Digest, Sha1};
use sha2::{Sha256, Sha512};

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

// ---------------------------------------------------------------------------
// caching_sha2_password
// ---------------------------------------------------------------------------

/// Salt length of a `caching_sha2_password` hash, in bytes (MySQL `CRYPT_SALT_LENGTH`,
/// include/crypt_genhash_impl.h).
pub const SHA2_SALT_LEN: usize = 20;

/// Length of the digest part of a `caching_sha2_password` hash, in characters of the
/// crypt base64 alphabet (32 bytes of SHA-256; MySQL `STORED_SHA256_DIGEST_LENGTH`,
/// sql/auth/i_sha2_password.h).
pub const SHA2_DIGEST_LEN: usize = 43;

/// Longest password `caching_sha2_password` accepts, in bytes (MySQL
/// `CACHING_SHA2_PASSWORD_MAX_PASSWORD_LENGTH` = `MAX_PLAINTEXT_LENGTH`,
/// sql/auth/i_sha2_password.h); a longer one never authenticates.
pub const SHA2_MAX_PASSWORD_LEN: usize = 256;

/// Largest iteration count (in thousands of rounds) the 3 hex digits hold: 0xFFF,
/// i.e. 4 095 000 rounds (MySQL `MAX_ITERATIONS` = 0xFFF * `ITERATION_MULTIPLIER`,
/// sql/auth/i_sha2_password.h).
pub const SHA2_MAX_COUNT: u32 = 0xFFF;

/// MySQL's default iteration count, in thousands of rounds ("005" = 5000 rounds,
/// `caching_sha2_password_digest_rounds` = 5000).
pub const SHA2_DEFAULT_COUNT: u32 = 5;

/// The alphabet of crypt's own base64 (not RFC 4648): `./0-9A-Za-z`, value 0 first.
const CRYPT_B64: &[u8; 64] = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// A `caching_sha2_password` credential as MySQL 8 stores it in
/// `mysql.user.authentication_string`:
///
/// `$A$` + 3 upper-case hex digits of the iteration count in thousands of rounds
/// (`005` = 5000 rounds) + `$` + 20 salt bytes + 43 characters of digest: 70 bytes.
///
/// The digest is SHA-256 crypt (Ulrich Drepper, "Unix crypt using SHA-256 and SHA-512",
/// the `$5$` of glibc), with two MySQL departures: the salt is 20 bytes where glibc stops
/// at 16, and the rounds come from the count field, not from a `rounds=` parameter. Rules
/// from MySQL sql/auth/sha2_password.cc (`Caching_sha2_password::deserialize` /
/// `serialize`), mysys/crypt_genhash_impl.cc (`my_crypt_genhash`, `generate_user_salt`).
///
/// The salt bytes are 7-bit and may be control characters (MySQL draws them from
/// 1..=127 minus `$`), so the text form is ASCII but not always printable; MySQL shows it
/// with `SHOW CREATE USER` under `print_identified_with_as_hex`.
///
/// An account without a password has an empty authentication_string; that is not a
/// `Sha2Hash` ([`Sha2Hash::parse`] refuses "").
#[derive(Clone, PartialEq, Eq)]
pub struct Sha2Hash {
    /// Iteration count in thousands of rounds, 1..=[`SHA2_MAX_COUNT`].
    count: u32,
    /// 20 bytes, each in 1..=127 and not `$`.
    salt: [u8; SHA2_SALT_LEN],
    /// The crypt-base64 digest text, as stored (MySQL compares this text).
    digest: [u8; SHA2_DIGEST_LEN],
}

impl std::fmt::Debug for Sha2Hash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sha2Hash").field("rounds", &self.rounds()).finish_non_exhaustive()
    }
}

impl Sha2Hash {
    /// Parse a `caching_sha2_password` authentication_string: `$A$` + 3 hex digits
    /// (count, in thousands of rounds, 001..FFF) + `$` + 20 salt bytes + 43 crypt-base64
    /// characters, exactly as `Caching_sha2_password::deserialize` in MySQL
    /// sql/auth/sha2_password.cc reads it. The count is hex (MySQL 8.0 servers that
    /// predate configurable rounds wrote it in decimal, which reads the same for the
    /// only value they used, `005`).
    ///
    /// Refuses "" (an account without a password), any other digest type than `A`, a
    /// count of 0, and salt bytes MySQL never generates (NUL, `$`, non-ASCII), since
    /// `my_crypt_genhash` would cut the salt short at them.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.is_empty() {
            return Err("caching_sha2_password hash is empty (an account without a password has no hash)".into());
        }
        let b = text.as_bytes();
        if !text.starts_with('$') {
            return Err("caching_sha2_password hash must start with '$A$' (the MySQL form)".into());
        }
        if !text.starts_with("$A$") {
            return Err("caching_sha2_password hash has an unknown digest type (only '$A$', SHA-256, exists)".into());
        }
        if b.len() < 7 || b[6] != b'$' {
            return Err("caching_sha2_password hash must be '$A$' + 3 hex digits of iteration count + '$'".into());
        }
        let count_text = &b[3..6];
        if !count_text.iter().all(u8::is_ascii_hexdigit) {
            return Err("caching_sha2_password iteration count must be 3 hex digits (e.g. '005')".into());
        }
        let count = count_text.iter().fold(0u32, |n, &c| n * 16 + char::from(c).to_digit(16).unwrap_or(0));
        if count == 0 {
            return Err("caching_sha2_password iteration count must not be 000".into());
        }
        let rest = &b[7..];
        if rest.len() != SHA2_SALT_LEN + SHA2_DIGEST_LEN {
            return Err(format!(
                "caching_sha2_password hash must have {} bytes of salt and digest after '$A${}$', got {}",
                SHA2_SALT_LEN + SHA2_DIGEST_LEN,
                String::from_utf8_lossy(count_text),
                rest.len()
            ));
        }
        let mut salt = [0u8; SHA2_SALT_LEN];
        salt.copy_from_slice(&rest[..SHA2_SALT_LEN]);
        if let Some(pos) = salt.iter().position(|&c| !salt_byte_ok(c)) {
            return Err(format!("caching_sha2_password salt byte {pos} is 0x{:02X}; MySQL salts are bytes 0x01..=0x7F other than '$'", salt[pos]));
        }
        let mut digest = [0u8; SHA2_DIGEST_LEN];
        digest.copy_from_slice(&rest[SHA2_SALT_LEN..]);
        if digest.iter().any(|c| !CRYPT_B64.contains(c)) {
            return Err("caching_sha2_password digest must be 43 characters of [./0-9A-Za-z]".into());
        }
        Ok(Sha2Hash { count, salt, digest })
    }

    /// Hash `password` (bytes as the client sends them, no terminator) with `salt` and
    /// `count` thousand rounds, as MySQL does for `CREATE USER .. IDENTIFIED WITH
    /// caching_sha2_password BY ..`.
    ///
    /// `salt` may be 20 random bytes: each is mapped as MySQL's `generate_user_salt`
    /// (mysys/crypt_genhash_impl.cc) maps its random bytes, `b & 0x7F`, then 0 and `$`
    /// moved up by one, so the result is a salt MySQL itself could have made. `count` is
    /// clamped to 1..=[`SHA2_MAX_COUNT`]; MySQL's default is [`SHA2_DEFAULT_COUNT`].
    ///
    /// A password longer than [`SHA2_MAX_PASSWORD_LEN`] bytes gets a hash all the same,
    /// but MySQL (and [`Sha2Hash::verify`]) will never accept it at login.
    pub fn generate(password: &[u8], salt: [u8; SHA2_SALT_LEN], count: u32) -> Sha2Hash {
        let salt = salt.map(|c| {
            let c = c & 0x7F;
            if c == 0 || c == b'$' {
                c + 1
            } else {
                c
            }
        });
        let count = count.clamp(1, SHA2_MAX_COUNT);
        let digest = crypt_b64_sha256(&sha256_crypt(password, &salt, count * 1000));
        Sha2Hash { count, salt, digest }
    }

    /// Whether `password` (plaintext bytes, as the client sends them in the full
    /// authentication exchange) is the one this hash was made from. Recomputes the
    /// digest with the stored salt and rounds ([`Sha2Hash::rounds`] SHA-256 crypt rounds:
    /// 5000 takes a few milliseconds) and compares in constant time. Passwords longer
    /// than [`SHA2_MAX_PASSWORD_LEN`] bytes are refused, as MySQL refuses them
    /// (`Caching_sha2_password::authenticate`, sql/auth/sha2_password.cc).
    pub fn verify(&self, password: &[u8]) -> bool {
        if password.len() > SHA2_MAX_PASSWORD_LEN {
            return false;
        }
        let computed = crypt_b64_sha256(&sha256_crypt(password, &self.salt, self.rounds()));
        constant_time_eq(&computed, &self.digest)
    }

    /// Number of SHA-256 crypt rounds: the count field times 1000 (MySQL
    /// `ITERATION_MULTIPLIER`), e.g. 5000 for `005`.
    pub fn rounds(&self) -> u32 {
        self.count * 1000
    }

    /// The MySQL text form: `$A$` + `{count:03X}` + `$` + salt + digest, as
    /// `Caching_sha2_password::serialize` writes it. ASCII, possibly with control
    /// characters from the salt; [`Sha2Hash::parse`] reads it back.
    pub fn to_mysql_string(&self) -> String {
        let mut s = format!("$A${:03X}$", self.count);
        // Salt bytes are 1..=127 and the digest is base64 text: all ASCII.
        s.extend(self.salt.iter().map(|&c| c as char));
        s.extend(self.digest.iter().map(|&c| c as char));
        s
    }
}

/// A salt byte `generate_user_salt` can produce and `my_crypt_genhash` uses whole.
fn salt_byte_ok(c: u8) -> bool {
    (1..=0x7F).contains(&c) && c != b'$'
}

/// Equality of two equal-length byte strings, in time that does not depend on where
/// they differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// SHA-256 crypt's raw 32-byte result: steps 1-21 of Drepper's specification
/// (<https://www.akkadia.org/drepper/SHA-crypt.txt>), as in MySQL's `my_crypt_genhash`
/// (mysys/crypt_genhash_impl.cc). `salt` is used whole (the caller truncates: 16 bytes
/// for glibc's `$5$`, 20 for MySQL); `rounds` is used as given (the caller clamps).
fn sha256_crypt(password: &[u8], salt: &[u8], rounds: u32) -> [u8; 32] {
    let plen = password.len();

    // 4-8. B = SHA256(password || salt || password).
    let b: [u8; 32] = Sha256::new().chain_update(password).chain_update(salt).chain_update(password).finalize().into();

    // 1-3, 9-12. A.
    let mut ctx = Sha256::new();
    ctx.update(password);
    ctx.update(salt);
    let mut n = plen;
    while n > 32 {
        ctx.update(b);
        n -= 32;
    }
    ctx.update(&b[..n]);
    let mut n = plen;
    while n > 0 {
        if n & 1 != 0 {
            ctx.update(b);
        } else {
            ctx.update(password);
        }
        n >>= 1;
    }
    let a: [u8; 32] = ctx.finalize().into();

    // 13-16. P: SHA256(password repeated plen times), repeated to plen bytes.
    let mut ctx = Sha256::new();
    for _ in 0..plen {
        ctx.update(password);
    }
    let dp: [u8; 32] = ctx.finalize().into();
    let p: Vec<u8> = dp.iter().copied().cycle().take(plen).collect();

    // 17-20. S: SHA256(salt repeated 16 + A[0] times), repeated to the salt's length.
    let mut ctx = Sha256::new();
    for _ in 0..16 + usize::from(a[0]) {
        ctx.update(salt);
    }
    let ds: [u8; 32] = ctx.finalize().into();
    let s: Vec<u8> = ds.iter().copied().cycle().take(salt.len()).collect();

    // 21. The rounds; C starts as A.
    let mut c = a;
    let mut ctx = Sha256::new();
    for i in 0..rounds {
        if i & 1 != 0 {
            ctx.update(&p);
        } else {
            ctx.update(c);
        }
        if i % 3 != 0 {
            ctx.update(&s);
        }
        if i % 7 != 0 {
            ctx.update(&p);
        }
        if i & 1 != 0 {
            ctx.update(c);
        } else {
            ctx.update(&p);
        }
        c = ctx.finalize_reset().into();
    }
    c
}

/// Step 22 of Drepper's specification for SHA-256: the 32 bytes in crypt's byte order,
/// 24 bits at a time, 6 bits per character, least significant first, into 43
/// characters of [`CRYPT_B64`] (the `b64_from_24bit` calls of `my_crypt_genhash`).
fn crypt_b64_sha256(d: &[u8; 32]) -> [u8; SHA2_DIGEST_LEN] {
    const GROUPS: [(usize, usize, usize); 10] =
        [(0, 10, 20), (21, 1, 11), (12, 22, 2), (3, 13, 23), (24, 4, 14), (15, 25, 5), (6, 16, 26), (27, 7, 17), (18, 28, 8), (9, 19, 29)];
    let mut out = [0u8; SHA2_DIGEST_LEN];
    let mut pos = 0;
    let mut put = |b2: u8, b1: u8, b0: u8, n: usize| {
        let mut w = (u32::from(b2) << 16) | (u32::from(b1) << 8) | u32::from(b0);
        for _ in 0..n {
            out[pos] = CRYPT_B64[(w & 0x3F) as usize];
            pos += 1;
            w >>= 6;
        }
    };
    for (x, y, z) in GROUPS {
        put(d[x], d[y], d[z], 4);
    }
    put(0, d[31], d[30], 3);
    out
}

// ---------------------------------------------------------------------------
// MariaDB ed25519
// ---------------------------------------------------------------------------

/// Length of an `ed25519` authentication_string, in characters: base64 of 32 bytes
/// without its `=` padding (MariaDB `PASSWORD_LEN`, plugin/auth_ed25519/server_ed25519.c).
pub const ED25519_KEY_TEXT_LEN: usize = 43;

/// Length of the server's nonce the client signs, in bytes (MariaDB `NONCE_BYTES`,
/// plugin/auth_ed25519/common.h).
pub const ED25519_NONCE_LEN: usize = 32;

/// The RFC 4648 base64 alphabet (MariaDB's `my_base64_encode`).
const STD_B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// A MariaDB `ed25519` credential: the user's 32-byte Ed25519 public key, kept in
/// `mysql.global_priv` (`IDENTIFIED VIA ed25519 USING '...'`) as 43 characters of
/// standard base64 without padding, e.g. `ZIgUREUg5PVgQ6LskhXmO+eZLS0nC8be6HPjYWR4YJY`
/// for the password `secret`.
///
/// MariaDB derives the key pair from the password, not from a random seed:
/// az = SHA-512(password), a = az[0..32] clamped (`az[0] &= 248; az[31] &= 63;
/// az[31] |= 64`), public key A = a·B (plugin/auth_ed25519/ref10/keypair.c). At login
/// the server sends a 32-byte nonce and the client returns an Ed25519 signature of it
/// made with the expanded secret az (ref10/sign.c; see [`ed25519_sign`]).
///
/// The public key is a password verifier (a dictionary attack can test guesses against
/// it), so `Debug` does not print it.
#[derive(Clone, PartialEq, Eq)]
pub struct Ed25519Key(VerifyingKey);

impl std::fmt::Debug for Ed25519Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Ed25519Key(..)")
    }
}

impl Ed25519Key {
    /// Parse the MariaDB text form: exactly 43 characters of standard base64 (`A-Za-z0-9+/`,
    /// no `=`), as `digest_to_binary` in plugin/auth_ed25519/server_ed25519.c requires,
    /// decoding to 32 bytes. Also refuses bytes that are not an Ed25519 point (no
    /// signature could ever match them) and small-order points (signatures for them can
    /// be forged without any password), neither of which a password yields.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.len() != ED25519_KEY_TEXT_LEN {
            return Err(format!(
                "ed25519 key must be {ED25519_KEY_TEXT_LEN} characters of base64 (MariaDB's ed25519_password() form), got {}",
                text.len()
            ));
        }
        let bytes = std_b64_decode_32(text)?;
        let key = VerifyingKey::from_bytes(&bytes).map_err(|_| "ed25519 key is not a valid Ed25519 public key (not a curve point)".to_string())?;
        if key.is_weak() {
            return Err("ed25519 key is a small-order point, which no password yields".into());
        }
        Ok(Ed25519Key(key))
    }

    /// The key MariaDB stores for `password` (bytes as typed, any length): what
    /// `SELECT ed25519_password('...')` or `IDENTIFIED VIA ed25519 USING PASSWORD('...')`
    /// gives (plugin/auth_ed25519/ref10/keypair.c).
    pub fn from_password(password: &[u8]) -> Self {
        let esk = expanded_secret(password);
        Ed25519Key(VerifyingKey::from(&esk))
    }

    /// The MariaDB text form: 43 characters of standard base64, no padding.
    pub fn to_mysql_string(&self) -> String {
        std_b64_encode(self.0.as_bytes())
    }

    /// Whether `signature` (64 bytes, R || s) is this key's Ed25519 signature of
    /// `message` (at login, the server's [`ED25519_NONCE_LEN`]-byte nonce). False for any
    /// other length; never panics.
    ///
    /// Uses RFC 8032 verification with ed25519-dalek's `verify_strict`: besides what
    /// MariaDB's ref10 `crypto_sign_open` checks, it also refuses a non-canonical s and a
    /// small-order R, which no honest signer (MariaDB's client, [`ed25519_sign`])
    /// produces.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        let Ok(bytes) = <[u8; 64]>::try_from(signature) else {
            return false;
        };
        self.0.verify_strict(message, &Signature::from_bytes(&bytes)).is_ok()
    }
}

/// The 64-byte Ed25519 signature (R || s) a MariaDB client sends for `message` (the
/// server's 32-byte nonce) when logging in with `password` through the `ed25519` plugin:
/// standard Ed25519 signing, except that the 64-byte expanded secret is SHA-512(password)
/// itself, so r = SHA-512(az[32..64] || message) (MariaDB plugin/auth_ed25519/ref10/sign.c;
/// the client side lives in Connector/C, libmariadb plugins/auth/ed25519.c). It verifies under
/// [`Ed25519Key::from_password`]`(password)`. For a 32-byte password it is the RFC 8032
/// signature with that password as the secret key.
pub fn ed25519_sign(password: &[u8], message: &[u8]) -> [u8; 64] {
    let esk = expanded_secret(password);
    let public = VerifyingKey::from(&esk);
    raw_sign::<Sha512>(&esk, message, &public).to_bytes()
}

/// MariaDB's expanded secret: SHA-512(password), the first half clamped into the scalar.
fn expanded_secret(password: &[u8]) -> ExpandedSecretKey {
    let az: [u8; 64] = Sha512::digest(password).into();
    ExpandedSecretKey::from_bytes(&az)
}

/// Standard base64 (RFC 4648 alphabet) without `=` padding.
fn std_b64_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let w = chunk.iter().enumerate().fold(0u32, |w, (i, &b)| w | (u32::from(b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(STD_B64[((w >> (18 - 6 * i)) & 0x3F) as usize] as char);
        }
    }
    out
}

/// Decode 43 characters of unpadded standard base64 into 32 bytes; the 2 bits left over
/// in the last character must be zero (as `std_b64_encode` writes them).
fn std_b64_decode_32(text: &str) -> Result<[u8; 32], String> {
    let mut out = [0u8; 32];
    let (mut acc, mut nbits, mut n) = (0u32, 0u32, 0usize);
    for &c in text.as_bytes() {
        let v =
            STD_B64.iter().position(|&a| a == c).ok_or_else(|| "ed25519 key is not base64 (characters A-Z a-z 0-9 + / only, no '=')".to_string())?;
        acc = (acc << 6) | v as u32;
        nbits += 6;
        if nbits >= 8 {
            nbits -= 8;
            if n == out.len() {
                return Err("ed25519 key decodes to more than 32 bytes".into());
            }
            out[n] = (acc >> nbits) as u8;
            n += 1;
            acc &= (1 << nbits) - 1;
        }
    }
    if n != out.len() {
        return Err("ed25519 key decodes to fewer than 32 bytes".into());
    }
    if acc != 0 {
        return Err("ed25519 key's last base64 character is not canonical (its 2 low bits must be zero)".into());
    }
    Ok(out)
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

    // ---- caching_sha2_password ----

    /// glibc's `$5$` on top of `sha256_crypt`: `$5$[rounds=N$]salt`, salt cut at 16 bytes
    /// or a `$`, rounds clamped to 1000..=999999999 (Drepper's specification, section
    /// "rounds="). Only the test vectors need it.
    fn glibc_sha256_crypt(password: &str, setting: &str) -> String {
        let mut rest = setting.strip_prefix("$5$").unwrap();
        let mut rounds = None;
        if let Some(r) = rest.strip_prefix("rounds=") {
            let (n, after) = r.split_once('$').unwrap();
            rounds = Some(n.parse::<u32>().unwrap().clamp(1000, 999_999_999));
            rest = after;
        }
        let salt = &rest.as_bytes()[..rest.find('$').unwrap_or(rest.len()).min(16)];
        let digest = crypt_b64_sha256(&sha256_crypt(password.as_bytes(), salt, rounds.unwrap_or(5000)));
        let salt = std::str::from_utf8(salt).unwrap();
        let digest = std::str::from_utf8(&digest).unwrap();
        match rounds {
            Some(r) => format!("$5$rounds={r}${salt}${digest}"),
            None => format!("$5${salt}${digest}"),
        }
    }

    #[test]
    fn sha256_crypt_matches_drepper_vectors() {
        // The SHA-256 test vectors of Ulrich Drepper's "Unix crypt using SHA-256 and
        // SHA-512" (https://www.akkadia.org/drepper/SHA-crypt.txt); the first two and the
        // rounds=5000 form also checked against `openssl passwd -5` and glibc crypt(3).
        let vectors = [
            ("$5$saltstring", "Hello world!", "$5$saltstring$5B8vYYiY.CVt1RlTTf8KbXBH3hsxY/GNooZaBBGWEc5"),
            ("$5$rounds=5000$saltstring", "Hello world!", "$5$rounds=5000$saltstring$5B8vYYiY.CVt1RlTTf8KbXBH3hsxY/GNooZaBBGWEc5"),
            ("$5$rounds=10000$saltstringsaltstring", "Hello world!", "$5$rounds=10000$saltstringsaltst$3xv.VbSHBb41AL9AvLeujZkZRBAwqFMz2.opqey6IcA"),
            (
                "$5$rounds=5000$toolongsaltstring",
                "This is just a test",
                "$5$rounds=5000$toolongsaltstrin$Un/5jzAHMgOGZ5.mWJpuVolil07guHPvOW8mGRcvxa5",
            ),
            (
                "$5$rounds=1400$anotherlongsaltstring",
                "a very much longer text to encrypt.  This one even stretches over morethan one line.",
                "$5$rounds=1400$anotherlongsalts$Rx.j8H.h8HjEDGomFU8bDkXm3XIUnzyxf12oP84Bnq1",
            ),
            (
                "$5$rounds=77777$short",
                "we have a short salt string but not a short password",
                "$5$rounds=77777$short$JiO1O3ZpDAxGJeaDIuqCoEFysAe1mZNJRs3pw0KQRd/",
            ),
            ("$5$rounds=123456$asaltof16chars..", "a short string", "$5$rounds=123456$asaltof16chars..$gP3VQ/6X7UUEW3HkBn2w1/Ptq2jxPyzV/cZKmF/wJvD"),
            (
                "$5$rounds=10$roundstoolow",
                "the minimum number is still observed",
                "$5$rounds=1000$roundstoolow$yfvwcWrQ8l/K0DAWyuPMDNHpIVlTQebY9l/gL972bIC",
            ),
            // Empty password (P and the step-11 loop are empty): glibc 2.36 crypt(3) here.
            ("$5$rounds=1000$abc", "", "$5$rounds=1000$abc$sP9FmVrTEqPcRDE7OxGDY0efugGF1dtCtqYcUsX9wmD"),
        ];
        for (setting, password, want) in vectors {
            assert_eq!(glibc_sha256_crypt(password, setting), want, "{setting}");
        }
    }

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    #[test]
    fn real_mysql_hash_with_20_byte_salt_verifies() {
        // The caching_sha2_password hash of "foobar" from TiDB's test suite
        // (pingcap/tidb pkg/parser/auth/caching_sha2_test.go, TestCheckShaPasswordGood),
        // hex because its MySQL-made salt holds control bytes (0x03, 0x1A, 0x1C, 0x16, 0x7F).
        let text = String::from_utf8(unhex(
            "24412430303524031A69251C34295C4B35167C7F1E5A7B63091349503974624D34504B5A424679354856336868686F52485A736E4A733368786E427575516C73446469496537",
        ))
        .unwrap();
        let h = Sha2Hash::parse(&text).unwrap();
        assert_eq!(h.rounds(), 5000);
        assert!(h.verify(b"foobar"));
        assert!(!h.verify(b"not_foobar"));
        assert!(!h.verify(b"foobar "));
        assert!(!h.verify(b""));
        assert_eq!(h.to_mysql_string(), text);
        // The 20-byte salt matters: cut to glibc's 16 it no longer verifies.
        let digest16 = crypt_b64_sha256(&sha256_crypt(b"foobar", &h.salt[..16], 5000));
        assert_ne!(digest16, h.digest);
    }

    #[test]
    fn generated_hash_round_trips() {
        let h = Sha2Hash::generate(b"s3cret", *b"abcdefghij0123456789", SHA2_DEFAULT_COUNT);
        let text = h.to_mysql_string();
        assert!(text.starts_with("$A$005$abcdefghij0123456789"), "{text}");
        assert_eq!(text.len(), 7 + SHA2_SALT_LEN + SHA2_DIGEST_LEN);
        let parsed = Sha2Hash::parse(&text).unwrap();
        assert_eq!(parsed, h);
        assert!(parsed.verify(b"s3cret"));
        assert!(!parsed.verify(b"s3creT"));

        // The count field is hex, in thousands of rounds.
        let h = Sha2Hash::generate(b"", *b"abcdefghij0123456789", 10);
        assert!(h.to_mysql_string().starts_with("$A$00A$"));
        assert_eq!(Sha2Hash::parse(&h.to_mysql_string()).unwrap().rounds(), 10_000);
        assert!(h.verify(b""));
        assert!(!h.verify(b"x"));
        assert_eq!(Sha2Hash::generate(b"", *b"abcdefghij0123456789", 0).rounds(), 1000);
    }

    #[test]
    fn generate_maps_random_salt_bytes_as_mysql_does() {
        // generate_user_salt: b & 0x7F, then 0 and '$' go up by one.
        let mut salt = [b'a'; 20];
        salt[..6].copy_from_slice(&[0x00, b'$', 0x80, 0xA4, 0xFF, 0x7F]);
        let h = Sha2Hash::generate(b"pw", salt, 1);
        assert_eq!(&h.salt[..6], &[0x01, b'%', 0x01, b'%', 0x7F, 0x7F]);
        let text = h.to_mysql_string();
        assert_eq!(Sha2Hash::parse(&text).unwrap(), h);
        assert!(h.verify(b"pw"));
    }

    #[test]
    fn sha2_password_longer_than_mysql_allows_is_refused() {
        let long = [b'p'; SHA2_MAX_PASSWORD_LEN + 1];
        let h = Sha2Hash::generate(&long, [b's'; 20], 1);
        assert!(!h.verify(&long));
        let max = [b'p'; SHA2_MAX_PASSWORD_LEN];
        assert!(Sha2Hash::generate(&max, [b's'; 20], 1).verify(&max));
    }

    #[test]
    fn mysql_locked_account_placeholder_parses_but_matches_nothing() {
        // What MySQL 8 stores for mysql.sys, mysql.session, mysql.infoschema.
        let h = Sha2Hash::parse("$A$005$THISISACOMBINATIONOFINVALIDSALTANDPASSWORDTHATMUSTNEVERBRBEUSED").unwrap();
        assert!(!h.verify(b""));
        assert!(!h.verify(b"THISISACOMBINATIONOF"));
    }

    #[test]
    fn bad_sha2_hashes_are_refused() {
        let good = "$A$005$abcdefghij0123456789".to_string() + &"x".repeat(SHA2_DIGEST_LEN);
        assert!(Sha2Hash::parse(&good).is_ok());
        let cases: &[(&str, &str)] = &[
            ("", "empty"),
            ("*5BCB3E6AC345B435C7C2E6B7949A04CE6F6563D3", "must start with '$A$'"),
            ("$5$saltstring$5B8vYYiY.CVt1RlTTf8KbXBH3hsxY/GNooZaBBGWEc5", "digest type"),
            ("$A$05$abcdefghij0123456789", "3 hex digits"),
            ("$A$0G5$abcdefghij0123456789", "3 hex digits"),
            ("$A$+05$abcdefghij0123456789", "3 hex digits"),
            ("$A$000$abcdefghij0123456789", "000"),
            ("$A$005$abcdefghij0123456789xxxx", "63 bytes"),
        ];
        for (text, needle) in cases {
            let err = Sha2Hash::parse(text).unwrap_err();
            assert!(err.contains(needle), "{text:?}: {err}");
        }
        let with = |at: usize, s: &str| {
            let mut t = good.clone();
            t.replace_range(at..at + 1, s);
            t
        };
        assert!(Sha2Hash::parse(&with(10, "$")).unwrap_err().contains("salt byte 3 is 0x24"));
        assert!(Sha2Hash::parse(&with(10, "\0")).unwrap_err().contains("salt byte 3 is 0x00"));
        assert!(Sha2Hash::parse(&with(30, "!")).unwrap_err().contains("digest"));
        // A non-ASCII salt character: refused whatever the length arithmetic says.
        assert!(Sha2Hash::parse(&with(10, "é")[..good.len()]).unwrap_err().contains("salt byte 3 is 0xC3"));
        assert!(Sha2Hash::parse(&with(10, "é")).is_err());
    }

    #[test]
    fn sha2_debug_prints_no_secret() {
        let h = Sha2Hash::generate(b"pw", *b"SALTSALTSALTSALTSALT", 1);
        let s = format!("{h:?}");
        assert_eq!(s, "Sha2Hash { rounds: 1000, .. }");
    }

    // ---- MariaDB ed25519 ----

    #[test]
    fn mariadb_ed25519_keys_match_the_server() {
        let known: &[(&[u8], &str)] = &[
            // MariaDB's own test, mysql-test/suite/plugins/r/auth_ed25519.result.
            (b"foo", "vubFBzIrapbfHct1/J72dnUryz5VS7lA6XHH8sIx4TI"),
            (b"foobar", "qv2mG6HWCuy32Slb5xhV4THStewNz2VINVPbgk+XAJ8"),
            (b"foo bar", "Y5fV74JAVRMOK2cdnUsYS+WW9sXaaL/o+6WGKOgqnzc"),
            (b"bar", "pfzkeWMzkTefY1oshXS+/kATeN51M+4jxi3/cbyTd10"),
            // The same file logs in as test1 with "secret" under this key.
            (b"secret", "ZIgUREUg5PVgQ6LskhXmO+eZLS0nC8be6HPjYWR4YJY"),
            // SELECT ed25519_password(..) on MariaDB 10.11.19 (Debian 12 auth_ed25519.so).
            (b"", "4LH+dBF+G5W2CKTyId8xR3SyDqZoQjUNUVNxx8aWbG4"),
            (&[b'x'; 200], "e5HbLfRFhb6rEM7LQ9dsQkRCGYfoDJTApL9+CCscjD4"),
            (&[0x00, 0xFF, 0x80], "+8zoBocxTb7opIRmTVNyV02bsE6zvcFyQKY8bYNv1L4"),
            ("pässwörd".as_bytes(), "3AcJUN7vR2AnAzs/McwNtGs2GDbHzL5YqZoIOPw62V0"),
        ];
        for (password, text) in known {
            let key = Ed25519Key::from_password(password);
            assert_eq!(key.to_mysql_string(), *text, "{:?}", String::from_utf8_lossy(password));
            assert_eq!(Ed25519Key::parse(text).unwrap(), key);
        }
    }

    #[test]
    fn ed25519_sign_matches_rfc8032_for_32_byte_passwords() {
        // With a 32-byte password, SHA-512(password) is exactly RFC 8032's expansion of a
        // 32-byte secret key, so RFC 8032 section 7.1's TEST 1-3 apply: (secret, public,
        // message, signature).
        let vectors = [
            (
                "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
                "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
                "",
                "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
            ),
            (
                "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
                "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
                "72",
                "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
            ),
            (
                "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
                "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
                "af82",
                "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a",
            ),
        ];
        for (secret, public, message, signature) in vectors {
            let (secret, message) = (unhex(secret), unhex(message));
            let key = Ed25519Key::from_password(&secret);
            assert_eq!(key.0.as_bytes().as_slice(), unhex(public).as_slice());
            let sig = ed25519_sign(&secret, &message);
            assert_eq!(sig.as_slice(), unhex(signature).as_slice());
            assert!(key.verify(&message, &sig));
        }
    }

    #[test]
    fn ed25519_sign_verify_round_trip_and_refusals() {
        let key = Ed25519Key::parse("ZIgUREUg5PVgQ6LskhXmO+eZLS0nC8be6HPjYWR4YJY").unwrap();
        let nonce: [u8; ED25519_NONCE_LEN] = std::array::from_fn(|i| (i * 7 + 3) as u8);
        let sig = ed25519_sign(b"secret", &nonce);
        assert!(key.verify(&nonce, &sig));
        // Deterministic, like MariaDB's ref10 signer.
        assert_eq!(sig, ed25519_sign(b"secret", &nonce));

        // Wrong password, wrong nonce, tampered signature.
        assert!(!key.verify(&nonce, &ed25519_sign(b"Secret", &nonce)));
        let mut other = nonce;
        other[31] ^= 1;
        assert!(!key.verify(&other, &sig));
        for i in [0, 31, 32, 63] {
            let mut bad = sig;
            bad[i] ^= 0x10;
            assert!(!key.verify(&nonce, &bad), "bit flipped in byte {i}");
        }
        // Wrong lengths and junk: false, no panic.
        assert!(!key.verify(&nonce, &[]));
        assert!(!key.verify(&nonce, &sig[..63]));
        let mut long = sig.to_vec();
        long.push(0);
        assert!(!key.verify(&nonce, &long));
        assert!(!key.verify(&nonce, &[0u8; 64]));
        assert!(!key.verify(&nonce, &[0xFFu8; 64]));
        // s + L (non-canonical, same value mod L): refused.
        let mut s_plus_l = sig;
        let l: [u8; 32] = unhex("edd3f55c1a631258d69cf7a2def9de1400000000000000000000000000000010").try_into().unwrap();
        let mut carry = 0u16;
        for i in 0..32 {
            let v = u16::from(s_plus_l[32 + i]) + u16::from(l[i]) + carry;
            s_plus_l[32 + i] = v as u8;
            carry = v >> 8;
        }
        assert!(!key.verify(&nonce, &s_plus_l));
    }

    #[test]
    fn bad_ed25519_keys_are_refused() {
        let cases: &[(&str, &str)] = &[
            ("", "43 characters"),
            ("foo", "43 characters"),
            // 44 with the '=' MariaDB drops.
            ("ZIgUREUg5PVgQ6LskhXmO+eZLS0nC8be6HPjYWR4YJY=", "43 characters"),
            // From MariaDB's auth_ed25519.result: "Password hash should be base64 encoded".
            (">>>1234567890123456789012345678901234567890", "not base64"),
            ("ZIgUREUg5PVgQ6LskhXmO-eZLS0nC8be6HPjYWR4YJY", "not base64"),
            // Last character carries 2 spare bits, which must be zero ('Y' = 24, 'Z' = 25).
            ("ZIgUREUg5PVgQ6LskhXmO+eZLS0nC8be6HPjYWR4YJZ", "not canonical"),
            // The identity point: small order, would accept forged signatures.
            ("AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "small-order"),
        ];
        for (text, needle) in cases {
            let err = Ed25519Key::parse(text).unwrap_err();
            assert!(err.contains(needle), "{text:?}: {err}");
        }
        // Some 32-byte strings are no curve point at all.
        let not_point = (2u8..=255)
            .map(|y| {
                let mut b = [0u8; 32];
                b[0] = y;
                b
            })
            .find(|b| VerifyingKey::from_bytes(b).is_err())
            .unwrap();
        let err = Ed25519Key::parse(&std_b64_encode(&not_point)).unwrap_err();
        assert!(err.contains("not a valid Ed25519 public key"), "{err}");
    }

    #[test]
    fn std_base64_matches_rfc4648() {
        // RFC 4648 section 10, padding removed.
        for (plain, coded) in
            [("", ""), ("f", "Zg"), ("fo", "Zm8"), ("foo", "Zm9v"), ("foob", "Zm9vYg"), ("fooba", "Zm9vYmE"), ("foobar", "Zm9vYmFy")]
        {
            assert_eq!(std_b64_encode(plain.as_bytes()), coded);
        }
        let bytes: [u8; 32] = std::array::from_fn(|i| (i * 37 + 11) as u8);
        assert_eq!(std_b64_decode_32(&std_b64_encode(&bytes)).unwrap(), bytes);
    }

    #[test]
    fn ed25519_debug_prints_no_key() {
        assert_eq!(format!("{:?}", Ed25519Key::from_password(b"secret")), "Ed25519Key(..)");
    }
}
