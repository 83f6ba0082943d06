//! `tractatus metrics`: the locks in the Prometheus text exposition (the `prometheus` crate), printed once or
//! served on `/metrics` (`--listen`, loopback unless `--allow-remote`).
//!
//! Gauges are read at each scrape (`lock status`, the session registry, a probe of each Redis
//! node). Counters and histograms come from the audit log: the printed form counts every event
//! the log still holds; the server counts each event once, as it first sees it, so its counters
//! only grow (the log is capped: the first scrape counts what it holds, later scrapes what came
//! since). Label values are lock names and node URLs only: bounded by the configuration and the
//! files locked, never by sessions or processes.

use std::net::SocketAddr;

use prometheus::core::Collector;
use prometheus::{
    Gauge, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder, exponential_buckets,
};
use tractatus_lock::stats::{Fresh, lock_stats};
use tractatus_lock::{Coordinator, Error, Result};

use crate::Context;
use crate::output;

/// The exposition's media type: the Prometheus text format, which Prometheus, `promtool` and
/// node_exporter's textfile collector all read.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The metrics and what the audit log has already been counted from.
struct Exporter {
    registry: Registry,
    fresh: Fresh,
    locks_held: IntGauge,
    oldest_hold: Gauge,
    held_for: GaugeVec,
    waiters: IntGaugeVec,
    queue: IntGaugeVec,
    slots_held: IntGaugeVec,
    sessions_live: IntGauge,
    node_up: IntGaugeVec,
    node_rtt: GaugeVec,
    node_quarantine: GaugeVec,
    grants: IntCounterVec,
    contended: IntCounterVec,
    lost: IntCounterVec,
    breaks: IntCounterVec,
    evictions: IntCounterVec,
    joins: IntCounterVec,
    wait: HistogramVec,
    hold: HistogramVec,
}

fn internal(e: prometheus::Error) -> Error {
    Error::internal(format!("metrics: {e}"))
}

/// Register `metric` with `registry` and hand it back.
fn add<C: Collector + Clone + 'static>(registry: &Registry, metric: C) -> Result<C> {
    registry
        .register(Box::new(metric.clone()))
        .map_err(internal)?;
    Ok(metric)
}

fn opts(name: &str, help: &str) -> Opts {
    Opts::new(format!("tractatus_{name}"), help)
}

impl Exporter {
    fn new() -> Result<Exporter> {
        let r = Registry::new();
        let gauge_vec = |name: &str, help: &str, label: &str| {
            add(
                &r,
                GaugeVec::new(opts(name, help), &[label]).map_err(internal)?,
            )
        };
        let int_gauge_vec = |name: &str, help: &str, label: &str| {
            add(
                &r,
                IntGaugeVec::new(opts(name, help), &[label]).map_err(internal)?,
            )
        };
        let counter = |name: &str, help: &str| {
            add(
                &r,
                IntCounterVec::new(opts(name, help), &["lock"]).map_err(internal)?,
            )
        };
        // 5 ms to about 2.7 minutes, doubling.
        let buckets = exponential_buckets(0.005, 2.0, 16).map_err(internal)?;
        let histogram = |name: &str, help: &str| {
            let o = HistogramOpts::new(format!("tractatus_{name}"), help).buckets(buckets.clone());
            add(&r, HistogramVec::new(o, &["lock"]).map_err(internal)?)
        };
        Ok(Exporter {
            fresh: Fresh::new(),
            locks_held: add(
                &r,
                IntGauge::with_opts(opts("locks_held", "Locks held now")).map_err(internal)?,
            )?,
            oldest_hold: add(
                &r,
                Gauge::with_opts(opts("oldest_hold_seconds", "Age of the oldest hold now"))
                    .map_err(internal)?,
            )?,
            held_for: gauge_vec(
                "lock_held_seconds",
                "How long the current holder has held the lock",
                "lock",
            )?,
            waiters: int_gauge_vec("lock_waiters", "Processes waiting for the lock", "lock")?,
            queue: int_gauge_vec(
                "lock_queue_length",
                "Waiters in the lock's queue (fair hand-off)",
                "lock",
            )?,
            slots_held: int_gauge_vec(
                "slots_held",
                "Slots held of a slotted lock (lock run --slots)",
                "lock",
            )?,
            sessions_live: add(
                &r,
                IntGauge::with_opts(opts("sessions_live", "Sessions live in the registry"))
                    .map_err(internal)?,
            )?,
            node_up: int_gauge_vec(
                "node_up",
                "1 when the Redis node answered the probe",
                "node",
            )?,
            node_rtt: gauge_vec(
                "node_round_trip_seconds",
                "Time the probe of the Redis node took",
                "node",
            )?,
            node_quarantine: gauge_vec(
                "node_quarantine_left_seconds",
                "Time left of the node's restart quarantine (0 once over, or when lock init marked this server run)",
                "node",
            )?,
            grants: counter("grants_total", "Leases granted")?,
            contended: counter(
                "contended_grants_total",
                "Grants that had to wait (10 ms or more)",
            )?,
            lost: counter("lost_leases_total", "Leases that expired while held")?,
            breaks: counter("breaks_total", "Leases ended by lock break")?,
            evictions: counter("evictions_total", "Leases of dead holders taken over")?,
            joins: counter("joins_total", "Processes that joined a held lease")?,
            wait: histogram("wait_seconds", "Wait from the first ask to the grant")?,
            hold: histogram(
                "hold_seconds",
                "Hold from the grant to the release, break or takeover",
            )?,
            registry: r,
        })
    }

    /// Read everything once more and render the exposition.
    async fn scrape(&mut self, ctx: &Context, c: Option<&Coordinator>) -> Result<String> {
        // The gauges say what is now: a lock no longer held, a node gone from the
        // configuration, must not linger with its last value.
        self.held_for.reset();
        self.waiters.reset();
        self.queue.reset();
        self.slots_held.reset();
        self.node_up.reset();
        self.node_rtt.reset();
        self.node_quarantine.reset();
        let live = match ctx.ws.sessions_observer()? {
            Some(s) => s.list().await?,
            None => Vec::new(),
        };
        self.sessions_live.set(
            live.iter()
                .filter(|s| s.state == tractatus_lock::session::SessionState::Live)
                .count() as i64,
        );
        let Some(c) = c else {
            self.locks_held.set(0);
            self.oldest_hold.set(0.0);
            return self.render();
        };
        for n in c.node_health().await {
            let label = [n.node.as_str()];
            self.node_up.with_label_values(&label).set(i64::from(n.up));
            if let Some(rtt) = n.round_trip_ms {
                self.node_rtt.with_label_values(&label).set(rtt / 1000.0);
            }
            if let Some(left) = n.quarantine_left_ms {
                self.node_quarantine
                    .with_label_values(&label)
                    .set(left as f64 / 1000.0);
            }
        }
        // Only names a lock can have become labels (see `Coordinator::audit`).
        let ours = |name: &str| tractatus_lock::slots::check_lock_or_slot_name(name).is_ok();
        let mut locks = c.status().await?;
        locks.retain(|l| ours(&l.name));
        self.locks_held.set(locks.len() as i64);
        let mut oldest = 0u64;
        for l in &locks {
            oldest = oldest.max(l.held_ms);
            let label = [l.name.as_str()];
            self.held_for
                .with_label_values(&label)
                .set(l.held_ms as f64 / 1000.0);
            self.waiters.with_label_values(&label).set(l.waiters as i64);
            self.queue
                .with_label_values(&label)
                .set(l.queue.len() as i64);
            if let Some(set) = &l.slot_of {
                self.slots_held.with_label_values(&[set.as_str()]).inc();
            }
        }
        self.oldest_hold.set(oldest as f64 / 1000.0);
        if let Some(events) = c.audit(None).await? {
            let new = self.fresh.mark(&events);
            let is_new = |i: usize, _: &tractatus_lock::ops::AuditEvent| {
                new.get(i).copied().unwrap_or(false)
            };
            for s in lock_stats(&events, is_new) {
                let label = [s.name.as_str()];
                self.grants.with_label_values(&label).inc_by(s.grants);
                self.contended.with_label_values(&label).inc_by(s.contended);
                self.lost.with_label_values(&label).inc_by(s.lost_leases);
                self.breaks.with_label_values(&label).inc_by(s.breaks);
                self.evictions.with_label_values(&label).inc_by(s.evictions);
                self.joins.with_label_values(&label).inc_by(s.joins);
                let wait = self.wait.with_label_values(&label);
                for w in &s.waits_ms {
                    wait.observe(*w as f64 / 1000.0);
                }
                let hold = self.hold.with_label_values(&label);
                for h in &s.holds_ms {
                    hold.observe(*h as f64 / 1000.0);
                }
            }
        }
        self.render()
    }

    fn render(&self) -> Result<String> {
        TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .map_err(internal)
    }
}

pub async fn run(ctx: &Context, listen: Option<&str>, allow_remote: bool) -> Result<i32> {
    let Some(addr) = listen else {
        let c = ctx.observer().await?;
        let text = Exporter::new()?.scrape(ctx, c.as_ref()).await?;
        // The exposition ends with its own newline.
        output::out(text.trim_end_matches('\n'))?;
        return Ok(0);
    };
    let addr = bind_address(addr, allow_remote)?;
    let server = tiny_http::Server::http(addr).map_err(|e| Error::Unavailable {
        reachable: 0,
        total: 1,
        needed: 1,
        causes: vec![(addr.to_string(), format!("cannot listen: {e}"))],
    })?;
    output::note(&format!("serving metrics on http://{addr}/metrics"));
    let mut exporter = Exporter::new()?;
    let mut coordinator = None;
    loop {
        // tiny_http blocks: its wait for the next request runs off the runtime's threads.
        let server_ref = &server;
        let request = tokio::task::block_in_place(|| server_ref.recv())
            .map_err(|e| Error::internal(format!("metrics server: {e}")))?;
        let response = if request.url() != "/metrics" {
            text_response(
                404,
                "not found: the metrics are at /metrics\n",
                "text/plain",
            )
        } else {
            // The namespace appears with the first lock: look again until it does.
            if coordinator.is_none() {
                coordinator = ctx.observer().await.ok().flatten();
            }
            match exporter.scrape(ctx, coordinator.as_ref()).await {
                Ok(text) => text_response(200, &text, CONTENT_TYPE),
                Err(e) => text_response(
                    503,
                    &format!("{}\n", tractatus_lock::shown::escape(&e.to_string())),
                    "text/plain",
                ),
            }
        };
        // A scraper that hung up is its own business.
        let _ = request.respond(response);
    }
}

fn text_response(
    code: u16,
    body: &str,
    content_type: &str,
) -> tiny_http::Response<std::io::Cursor<Vec<u8>>> {
    let mut r = tiny_http::Response::from_string(body).with_status_code(code);
    if let Ok(h) = tiny_http::Header::from_bytes("Content-Type", content_type) {
        r.add_header(h);
    }
    r
}

/// `--listen`'s address: an IP and a port; loopback unless `allow_remote` (the exposition
/// names locks and Redis nodes, which the network at large need not see).
fn bind_address(text: &str, allow_remote: bool) -> Result<SocketAddr> {
    let addr: SocketAddr = text.parse().map_err(|_| {
        Error::usage(format!(
            "bad --listen address '{}': expected IP:PORT, like 127.0.0.1:9464",
            text.escape_default()
        ))
    })?;
    if !addr.ip().is_loopback() && !allow_remote {
        return Err(Error::usage(format!(
            "refusing to serve metrics on {addr}, which is not loopback: pass --allow-remote \
             to mean it, or keep 127.0.0.1 and let a scraper on this host forward them"
        )));
    }
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_takes_loopback_and_refuses_the_rest_unless_allowed() {
        assert!(bind_address("127.0.0.1:9464", false).is_ok());
        assert!(bind_address("[::1]:9464", false).is_ok());
        assert_eq!(
            bind_address("0.0.0.0:9464", false).unwrap_err().exit_code(),
            64
        );
        assert!(bind_address("0.0.0.0:9464", true).is_ok());
        assert_eq!(
            bind_address("localhost", false).unwrap_err().exit_code(),
            64
        );
    }
}
