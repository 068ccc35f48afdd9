pub mod apifake;
pub mod aws_pipeline;
pub mod faults;
pub mod fixture;
pub mod fuzzgen;
pub mod moto;
pub mod operator;
pub mod otelcol;
