//! One integration test binary (links once). Every test starts its own redis-server processes
//! on free loopback ports (see `support`) and stops them, by pid, when it ends.

mod support;

mod cli;
mod cluster;
mod cluster_faults;
mod deadlock;
mod docs_commands;
mod failover;
mod fair;
mod fanout;
mod faults;
mod gc_race;
mod grant_faults;
mod group;
mod group_events;
mod guard_deadline;
mod handoff;
mod hang;
mod layers;
mod lock_run;
mod nemesis;
mod nested;
mod newcomer;
mod observe;
mod operate;
mod props;
mod redlock;
mod restart;
mod restart_data;
mod sessions;
mod slots;
mod stall;
mod state;
mod trust_config;
mod trust_deadlock;
mod trust_guard;
mod trust_lease;
mod trust_local;
mod trust_output;
mod trust_state;
mod twin_hosts;
