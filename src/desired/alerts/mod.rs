//! GPU alert rules as typed data, pure: one rule list (from the merge, restricted to the selected
//! DCGM fields) becomes CloudWatch alarms ([`cloudwatch`]), PrometheusRule groups ([`prometheus`])
//! and, for the collector's own delivery, multi-window burn-rate SLO alerts ([`slo`]).

pub mod cloudwatch;
pub mod prometheus;
pub mod slo;

pub use super::monitoring::*;
