//! The client proves who it is: the exchange for the user's method, shared by
//! the login ([`crate::handshake`]) and COM_CHANGE_USER.
//!
//! | user's `auth` | client answers with | exchange |
//! |---|---|---|
//! | `mysql_native_password` | native | proof checked against the stage-2 hash |
//! | `mysql_native_password` | `caching_sha2_password` | fast path if cached; full path over TLS (password checked against the native hash, then cached); without TLS an auth switch to native |
//! | `caching_sha2_password` | any | switch to it if needed; fast path if cached, else full path, TLS only |
//! | `ed25519` | any | switch to `client_ed25519` with a 32-byte nonce; signature checked against the public key |
//!
//! `caching_sha2_password` packets follow the MySQL manual ("Caching SHA-2
//! Pluggable Authentication"; the protocol page
//! `page_caching_sha2_authentication_exchanges`): `0x01 0x03` fast
//! authentication succeeded, `0x01 0x04` perform full authentication, answered
//! by the NUL-terminated password. RSA key exchange is not offered: without TLS
//! the full path is refused, as by a server that has no RSA key pair.
//! `client_ed25519` follows MariaDB's `plugin/auth_ed25519/server_ed25519.c`.

use baton_control::config::Credential;
use mysql_common::packets::AuthSwitchRequest;
use mysql_common::proto::MySerialize;
use rand::Rng;
use sha2::{Digest, Sha256};

use crate::auth::{self, BackendSecret, Password, ED25519_PLUGIN, NATIVE_PLUGIN, SHA2_PLUGIN};
use crate::context::{ProxyContext, Sha2Cached, UserEntry};
use crate::error::{MysqlError, ProxyError, Result};
use crate::packet::PacketIo;
use crate::stream::Stream;

/// The outcome of an exchange.
#[derive(Debug)]
pub enum Verdict {
    Allowed {
        entry: Box<UserEntry>,
        secret: BackendSecret,
    },
    /// Refused; `using_password` as the server's 1045 message says it.
    Denied {
        using_password: bool,
    },
}

/// One exchange on a client connection.
pub struct Exchange<'a> {
    pub io: &'a mut PacketIo<Stream>,
    pub ctx: &'a ProxyContext,
    /// The greeting's nonce (what the first answer answered).
    pub nonce: &'a [u8; 20],
    /// The sequence id of baton's next packet (updated as packets go by).
    pub seq: u8,
}

impl Exchange<'_> {
    /// Authenticate `user`, whose first answer (`data`) was made with `plugin`.
    pub async fn run(&mut self, user: &str, plugin: Option<&[u8]>, data: Vec<u8>) -> Result<Verdict> {
        let users = self.ctx.users();
        let entry = users.get(user).cloned();
        let plugin = plugin.filter(|p| !p.is_empty()).unwrap_or(NATIVE_PLUGIN).to_vec();
        let tls = self.io.get_ref().is_tls();
        let verdict = match entry.as_ref().map(|e| &e.credential) {
            Some(Credential::Ed25519(key)) => {
                let nonce: [u8; 32] = rand::rng().random();
                let sig = self.switch(ED25519_PLUGIN, &nonce).await?;
                Self::decide(entry.clone(), key.verify(&nonce, &sig), None, !sig.is_empty())
            }
            Some(Credential::CachingSha2(hash)) => {
                let data = if plugin == SHA2_PLUGIN { data } else { self.switch(SHA2_PLUGIN, &nul_ended(self.nonce)).await? };
                if let Some(cached) = self.fast_path(user, &data).await? {
                    return Ok(self.allowed(entry, cached));
                }
                match self.full_path(tls).await? {
                    Some(pw) => {
                        // SHA-crypt takes milliseconds (more for a large count): off the session thread.
                        let (h, p) = (hash.clone(), pw.clone());
                        let ok = tokio::task::spawn_blocking(move || h.verify(p.bytes())).await.unwrap_or(false);
                        self.after_full_path(user, entry.clone(), ok, pw)
                    }
                    None => Verdict::Denied { using_password: true },
                }
            }
            Some(Credential::Native(hash)) if plugin == SHA2_PLUGIN && (tls || self.cached(user).is_some()) => {
                if let Some(cached) = self.fast_path(user, &data).await? {
                    return Ok(self.allowed(entry, cached));
                }
                match self.full_path(tls).await? {
                    Some(pw) => {
                        let ok = auth::native_hash_matches(hash, pw.bytes());
                        self.after_full_path(user, entry.clone(), ok, pw)
                    }
                    None => Verdict::Denied { using_password: true },
                }
            }
            native => {
                let proof = if plugin == NATIVE_PLUGIN { data } else { self.switch(NATIVE_PLUGIN, &nul_ended(self.nonce)).await? };
                let stage1 = match native {
                    Some(Credential::Native(hash)) => auth::verify(hash, self.nonce, &proof),
                    _ => None,
                };
                let ok = stage1.is_some();
                Self::decide(entry.clone(), ok, stage1.map(BackendSecret::Stage1), !proof.is_empty())
            }
        };
        Ok(verdict)
    }

    fn decide(entry: Option<UserEntry>, ok: bool, secret: Option<BackendSecret>, using_password: bool) -> Verdict {
        match (entry, ok) {
            (Some(entry), true) => {
                let secret = match (&entry.backend_password, secret) {
                    (Some(p), _) => BackendSecret::Password(p.clone()),
                    (None, Some(s)) => s,
                    (None, None) => return Verdict::Denied { using_password },
                };
                Verdict::Allowed { entry: Box::new(entry), secret }
            }
            _ => Verdict::Denied { using_password },
        }
    }

    /// A full path's password checked (`ok`) against `entry`'s credential: allowed
    /// and cached only if the user still has that credential now (a reload may
    /// have changed or removed it while the client took its time).
    fn after_full_path(&self, user: &str, entry: Option<UserEntry>, ok: bool, pw: Password) -> Verdict {
        let Some(entry) = entry else { return Verdict::Denied { using_password: true } };
        let current = self.ctx.users().get(user).is_some_and(|now| now.credential == entry.credential);
        if !ok || !current {
            return Verdict::Denied { using_password: true };
        }
        self.cache(user, &pw, &entry.credential);
        Self::decide(Some(entry), true, Some(BackendSecret::Password(pw)), true)
    }

    fn allowed(&self, entry: Option<UserEntry>, cached: Sha2Cached) -> Verdict {
        Self::decide(entry, true, Some(cached.secret), true)
    }

    /// Send an auth switch to `plugin` with `data`; return the client's answer.
    async fn switch(&mut self, plugin: &[u8], data: &[u8]) -> Result<Vec<u8>> {
        let mut sw = Vec::with_capacity(plugin.len() + data.len() + 2);
        AuthSwitchRequest::new(plugin, data).serialize(&mut sw);
        self.send(&sw).await?;
        self.read().await
    }

    async fn send(&mut self, payload: &[u8]) -> Result<()> {
        self.io.send(self.seq, payload).await?;
        self.seq = self.seq.wrapping_add(1);
        Ok(())
    }

    async fn read(&mut self) -> Result<Vec<u8>> {
        let (s, _, reply) = self.io.read_logical(64 * 1024).await?;
        if s != self.seq {
            return Err(ProxyError::Fatal(MysqlError::packets_out_of_order()));
        }
        self.seq = s.wrapping_add(1);
        Ok(reply.to_vec())
    }

    /// The user's fast-path entry, if it was made against the credential the user has now.
    fn cached(&self, user: &str) -> Option<Sha2Cached> {
        let entry = self.ctx.sha2_cache.lock().unwrap_or_else(|p| p.into_inner()).get(user).cloned()?;
        let users = self.ctx.users();
        users.get(user).is_some_and(|now| now.credential == entry.credential).then_some(entry)
    }

    fn cache(&self, user: &str, pw: &Password, credential: &Credential) {
        let double_hash: [u8; 32] = Sha256::digest(Sha256::digest(pw.bytes())).into();
        let entry = Sha2Cached { double_hash, secret: BackendSecret::Password(pw.clone()), credential: credential.clone() };
        self.ctx.sha2_cache.lock().unwrap_or_else(|p| p.into_inner()).insert(user.to_string(), entry);
    }

    /// The fast path: `data` = SHA256(pw) XOR SHA256(SHA256(SHA256(pw)) + nonce),
    /// checked against the cache. On success `0x01 0x03` is sent.
    async fn fast_path(&mut self, user: &str, data: &[u8]) -> Result<Option<Sha2Cached>> {
        let Some(cached) = self.cached(user) else { return Ok(None) };
        if data.len() != 32 {
            return Ok(None);
        }
        let mask: [u8; 32] = Sha256::new().chain_update(cached.double_hash).chain_update(self.nonce).finalize().into();
        let stage1: Vec<u8> = data.iter().zip(mask).map(|(a, b)| a ^ b).collect();
        let check: [u8; 32] = Sha256::digest(&stage1).into();
        let diff = check.iter().zip(&cached.double_hash).fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if diff != 0 {
            return Ok(None);
        }
        self.send(&[0x01, 0x03]).await?;
        Ok(Some(cached))
    }

    /// The full path: `0x01 0x04`, then the password in clear, accepted inside
    /// TLS only. None: refused (no TLS, a public-key request, malformed).
    async fn full_path(&mut self, tls: bool) -> Result<Option<Password>> {
        self.send(&[0x01, 0x04]).await?;
        let mut reply = self.read().await?;
        if !tls {
            zeroize::Zeroize::zeroize(&mut reply);
            return Ok(None);
        }
        if reply.last() == Some(&0) {
            reply.pop();
        }
        Ok(Some(Password::new(reply)))
    }
}

fn nul_ended(nonce: &[u8; 20]) -> Vec<u8> {
    let mut v = nonce.to_vec();
    v.push(0);
    v
}
