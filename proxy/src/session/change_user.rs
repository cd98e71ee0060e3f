//! COM_CHANGE_USER: authenticate the new user against baton's users, then change
//! the backend session to that user with COM_CHANGE_USER of its own (the thread
//! id, what `CONNECTION_ID()` returns, stays the same, as on the server), or log
//! in afresh when the user belongs to another cluster or the backend is gone.
//! The collation is the packet's two-byte field (ids over 255 exist: 608 is
//! utf8mb4_croatian_ci). Never a silent OK.

use mysql_common::constants::CapabilityFlags;

use super::{route, Session};
use crate::authenticate::{Exchange, Verdict};
use crate::backend::Login;
use crate::error::{MysqlError, ProxyError, Result};
use crate::proto;
use crate::state::SessionState;
use crate::threads::Thread;

impl Session {
    pub(super) async fn change_user(&mut self, payload: &[u8]) -> Result<()> {
        let malformed = || ProxyError::Fatal(MysqlError::malformed_packet("COM_CHANGE_USER"));
        let mut c = proto::Cursor::new(&payload[1..]);
        let user = String::from_utf8_lossy(c.null_str().ok_or_else(malformed)?).into_owned();
        let proof = if self.caps.contains(CapabilityFlags::CLIENT_SECURE_CONNECTION) {
            let n = c.u8().ok_or_else(malformed)?;
            c.take(n as usize).ok_or_else(malformed)?.to_vec()
        } else {
            c.null_str().ok_or_else(malformed)?.to_vec()
        };
        let db = c.null_str().unwrap_or_default().to_vec();
        let collation = c.u16().filter(|&c| c != 0).unwrap_or(self.collation);
        let plugin = if self.caps.contains(CapabilityFlags::CLIENT_PLUGIN_AUTH) { c.null_str() } else { None };
        let ctx = self.ctx.clone();
        let mut exchange = Exchange { io: &mut self.client, ctx: &ctx, nonce: &self.nonce, seq: self.reply_seq };
        let verdict = exchange.run(&user, plugin, proof).await?;
        let seq = exchange.seq;
        let encrypted = self.client.get_ref().is_tls();
        let (entry, secret) = match verdict {
            Verdict::Allowed { entry, secret } if !entry.require_tls || encrypted => (*entry, secret),
            Verdict::Allowed { .. } | Verdict::Denied { .. } => {
                let using_password = !matches!(verdict, Verdict::Denied { using_password: false });
                let denied = MysqlError::access_denied(&user, &self.peer.ip().to_string(), using_password);
                self.client.send(seq, &proto::err_payload(&denied)).await?;
                return Err(ProxyError::Io(std::io::ErrorKind::PermissionDenied.into()));
            }
        };
        let Some(cluster) = self.ctx.clusters.get(&entry.cluster).cloned() else {
            let e = MysqlError::backend_unavailable(&entry.cluster, "?", "unknown cluster");
            self.client.send(seq, &proto::err_payload(&e)).await?;
            return Err(ProxyError::Io(std::io::ErrorKind::ConnectionAborted.into()));
        };
        let admission = match cluster.gate.admit().await {
            Ok(a) => a,
            Err(e) => {
                self.client.send(seq, &proto::err_payload(&MysqlError::from_gate_of(e, &cluster))).await?;
                return Err(ProxyError::Io(std::io::ErrorKind::ConnectionAborted.into()));
            }
        };
        let db = (!db.is_empty()).then_some(db);
        let login = Login { user: &user, secret: &secret, db: db.as_deref(), collation, client_caps: self.caps, client_ext_caps: self.ext_caps };
        // The same backend session when it is on this cluster's primary now.
        let same_primary = cluster.name == self.cluster.name
            && self.backend.as_mut().is_some_and(|b| !b.is_stale())
            && self.ctx.primary_of(&cluster.name).is_some_and(|(p, t)| t == self.backend_term && self.backend.as_ref().is_some_and(|b| b.addr == p));
        let result = if same_primary {
            let b = self.backend.as_mut().expect("checked");
            match b.change_user(&login).await {
                Ok(()) => Ok(None),
                Err(crate::backend::BackendError::Refused(raw)) => Err(super::MysqlErrorOrRaw::Raw(raw)),
                Err(other) => {
                    self.backend = None;
                    Err(super::MysqlErrorOrRaw::Mysql(MysqlError::backend_lost(&other.to_string())))
                }
            }
        } else {
            let generation = cluster.fence.generation();
            route::connect_primary(&self.ctx, &cluster.name, &login, self.registration.client_id()).await.map(|(b, t)| Some((b, t, generation)))
        };
        match result {
            Ok(fresh) => {
                drop(admission);
                if let Some((mut backend, term, generation)) = fresh {
                    backend.fence_with(&cluster.fence, generation);
                    if let Some(old) = self.backend.replace(backend) {
                        old.quit().await;
                    }
                    self.backend_term = term;
                }
                let b = self.backend.as_ref().expect("connected");
                self.registration.moved(Thread { addr: b.addr.clone(), id: b.connection_id });
                self.max_packet = b.defaults.max_allowed_packet.min(self.ctx.limits().max_allowed_packet);
                self.user = user;
                self.secret = secret;
                self.collation = collation;
                self.cluster = cluster;
                self.state = SessionState::new(db);
                self.state.tracking = b.defaults.tracking.clone();
                self.pin = None;
                self.long_data_pending = false;
                self.long_data_error = None;
                self.recording = None;
                self.tx_prefix = None;
                self.commit_floor = None;
                self.client.send(seq, &proto::ok_payload(0, proto::SERVER_STATUS_AUTOCOMMIT)).await?;
                Ok(())
            }
            Err(e) => {
                self.client.send(seq, &e.payload()).await?;
                Err(ProxyError::Io(std::io::ErrorKind::ConnectionAborted.into()))
            }
        }
    }
}
