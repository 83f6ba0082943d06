//! `session ...`: session ids.

use tractatus_lock::Result;

use crate::output;

/// `session new`: a fresh UUID v7.
pub fn new(json: bool) -> Result<i32> {
    let id = tractatus_lock::holder::new_session_id();
    if json {
        output::out(&serde_json::json!({ "session": id }).to_string())?;
    } else {
        output::out(&id)?;
    }
    Ok(0)
}
