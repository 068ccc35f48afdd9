pub mod apifake;
pub mod faults;
pub mod moto;
pub mod operator;
