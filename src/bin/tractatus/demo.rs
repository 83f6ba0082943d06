//! `demo`
use crate::cli::{DemoArgs, DemoEditArgs, DemoWorkerArgs, GlobalArgs};
use tractatus_lock::Result;
pub async fn run(_a: &DemoArgs, _g: GlobalArgs) -> Result<i32> {
    Ok(0)
}
pub async fn worker(_a: &DemoWorkerArgs) -> Result<i32> {
    Ok(0)
}
pub fn edit(_a: &DemoEditArgs) -> Result<i32> {
    Ok(0)
}
