//! `lock status --watch`: the live view.

use tractatus_lock::{Error, Result};

use crate::Context;

pub async fn run(_ctx: &Context, _interval: &str) -> Result<i32> {
    Err(Error::usage("lock status --watch is not built yet"))
}
