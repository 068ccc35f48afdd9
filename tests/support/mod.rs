pub mod apifake;
pub mod faults;
pub mod fixture;
pub mod moto;
pub mod operator;
