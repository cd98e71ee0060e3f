//! `KILL <id>` and COM_PROCESS_KILL with the connection id a client was given:
//! translated to the thread that id names now ([`crate::threads`]), and sent on
//! this session's own backend connection, so the server's privilege rules decide.

use super::Session;
use crate::error::MysqlError;
use crate::sql::Kill;

impl Session {
    /// The backend thread id to put in place of `k.id`; None to send the
    /// statement as it is (the id is not a baton client id: a server thread id).
    pub(super) fn translate_kill(&self, k: &Kill) -> Result<Option<u32>, MysqlError> {
        let Ok(id) = u32::try_from(k.id) else { return Ok(None) };
        let Some(target) = self.ctx.threads.lookup(id) else { return Ok(None) };
        let here = self.backend.as_ref().map(|b| b.addr.as_str());
        if here == Some(target.addr.as_str()) {
            Ok(Some(target.id))
        } else {
            // That session is on another server now: no thread of this id here.
            Err(MysqlError::unknown_thread(k.id))
        }
    }
}
