//! Desired state, pure: effective spec → Kubernetes objects and the AWS plan.
//!
//! No I/O, no clock, no randomness: the same input gives byte-identical output. The CLI's
//! `render`/`plan` and the controller both call into here, so they cannot disagree.

pub mod effective;
pub mod merge;
