//! `tractatus metrics`: the Prometheus exposition.

use tractatus_lock::{Error, Result};

use crate::Context;

pub async fn run(_ctx: &Context, _listen: Option<&str>, _allow_remote: bool) -> Result<i32> {
    Err(Error::usage("tractatus metrics is not built yet"))
}
