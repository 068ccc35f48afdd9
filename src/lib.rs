//! mlobs: a Kubernetes operator for ML observability on Amazon EKS.

pub mod aws;
pub mod cli;
pub mod collector_version;
pub mod controller;
pub mod conventions;
pub mod crd;
pub mod desired;
pub mod input;
pub mod offline;
pub mod report;
pub mod stdout;
