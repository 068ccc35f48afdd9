//! End-to-end scenarios: the operator (`mlobs run`, two replicas with leader election, running
//! with the chart's ServiceAccount token) against a real control plane (../shared/cluster: real
//! API server, garbage collector, DaemonSet controller, scheduler; kwok nodes) and moto as AWS.
//!
//! Run with `make e2e` (e2e/run.sh sets up everything these tests read from the environment);
//! `cargo test --test e2e` alone fails with instructions. Each test works in its own namespaces.
//! Tests under `serial::` look at the operator as a whole (its write counter, failover) and run
//! alone, after the others (e2e/run.sh runs them in a second invocation). `bench::` is the scale
//! bench of `make bench` (`MLOBS_E2E_BENCH=1 e2e/run.sh`), never part of `make e2e`. `sharded::`
//! runs last, alone, against the replicas restarted as two shards (e2e/run.sh's sharded phase).

mod admission;
mod alerts;
mod bench;
mod dataflow;
mod destinations;
mod hot_path;
mod loopback;
mod operator;
mod pipeline;
mod placement;
mod serial;
mod sharded;
mod sinks;
mod support;
